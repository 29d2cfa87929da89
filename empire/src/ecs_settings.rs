//! The `--scheduler ecs` settings: flags, `EMPIRE_ECS_*` (and friends) environment
//! variables, and an `[ecs]` table in the `--config` file, resolved into the deployer's
//! [`EcsConfig`], whose `check()` names whatever is missing.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use empire_deployer::{EcsConfig, LaunchType};
use serde::Deserialize;

use crate::config::parse_duration;

/// Flags of the `ecs` scheduler (`empire server --scheduler ecs`).
#[derive(Debug, Args, Default, Clone)]
pub struct EcsArgs {
    /// The ECS cluster services run in.
    #[arg(long, env = "EMPIRE_ECS_CLUSTER")]
    pub ecs_cluster: Option<String>,
    /// `FARGATE` (default) or `EC2`.
    #[arg(long, env = "EMPIRE_ECS_LAUNCH_TYPE")]
    pub ecs_launch_type: Option<String>,
    /// Subnets of awsvpc tasks (comma-separated).
    #[arg(long, env = "EMPIRE_ECS_SUBNETS")]
    pub ecs_subnets: Option<String>,
    /// Security groups of awsvpc tasks (comma-separated).
    #[arg(long, env = "EMPIRE_ECS_SECURITY_GROUPS")]
    pub ecs_security_groups: Option<String>,
    /// The task execution role (pulls images, reads config parameters, writes logs).
    #[arg(long, env = "EMPIRE_ECS_EXECUTION_ROLE_ARN")]
    pub ecs_execution_role_arn: Option<String>,
    /// The role the apps' tasks run as.
    #[arg(long, env = "EMPIRE_ECS_TASK_ROLE_ARN")]
    pub ecs_task_role_arn: Option<String>,
    /// The role EventBridge starts `cron` processes with.
    #[arg(long, env = "EMPIRE_ECS_EVENTS_ROLE_ARN")]
    pub ecs_events_role_arn: Option<String>,
    /// The VPC of the target groups.
    #[arg(long, env = "EMPIRE_VPC_ID")]
    pub vpc_id: Option<String>,
    /// The internal load balancer's listener.
    #[arg(long, env = "EMPIRE_ELB_INTERNAL_LISTENER_ARN")]
    pub elb_internal_listener_arn: Option<String>,
    /// The internet-facing load balancer's listener (custom domains).
    #[arg(long, env = "EMPIRE_ELB_EXTERNAL_LISTENER_ARN")]
    pub elb_external_listener_arn: Option<String>,
    /// The private hosted zone; its domain is the apps' internal domain.
    #[arg(long, env = "EMPIRE_ROUTE53_INTERNAL_ZONE_ID")]
    pub route53_internal_zone_id: Option<String>,
    /// The public hosted zone custom domains get records in.
    #[arg(long, env = "EMPIRE_ROUTE53_PUBLIC_ZONE_ID")]
    pub route53_public_zone_id: Option<String>,
    /// Follow each deployment to its end (`true`, default) or return once the services
    /// are updated (`false`).
    #[arg(long, env = "EMPIRE_ECS_ROLLOUT_WAIT")]
    pub ecs_rollout_wait: Option<bool>,
    /// How long a rollout may take (default `10m`).
    #[arg(long, env = "EMPIRE_ECS_ROLLOUT_TIMEOUT")]
    pub ecs_rollout_timeout: Option<String>,
}

/// The `[ecs]` table of the config file (keys named like the flags without `ecs_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsFileConfig {
    cluster: Option<String>,
    launch_type: Option<String>,
    subnets: Option<Vec<String>>,
    security_groups: Option<Vec<String>>,
    execution_role_arn: Option<String>,
    task_role_arn: Option<String>,
    events_role_arn: Option<String>,
    vpc_id: Option<String>,
    elb_internal_listener_arn: Option<String>,
    elb_external_listener_arn: Option<String>,
    route53_internal_zone_id: Option<String>,
    route53_public_zone_id: Option<String>,
    rollout_wait: Option<bool>,
    rollout_timeout: Option<String>,
}

fn list(text: Option<String>) -> Option<Vec<String>> {
    text.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Resolves flags and environment over the file; checks the result.
pub fn resolve(args: EcsArgs, file: Option<EcsFileConfig>) -> Result<EcsConfig> {
    let file = file.unwrap_or_default();
    let launch_type = match args.ecs_launch_type.or(file.launch_type) {
        None => LaunchType::Fargate,
        Some(text) => match LaunchType::parse(&text) {
            Some(kind) => kind,
            None => bail!("invalid EMPIRE_ECS_LAUNCH_TYPE {text:?}: expected EC2 or FARGATE"),
        },
    };
    let rollout_timeout = match args.ecs_rollout_timeout.or(file.rollout_timeout) {
        None => Duration::from_secs(600),
        Some(text) => match parse_duration(&text) {
            Some(d) => d,
            None => bail!("invalid EMPIRE_ECS_ROLLOUT_TIMEOUT {text:?}: use e.g. 10m or 90s"),
        },
    };
    let config = EcsConfig {
        cluster: args.ecs_cluster.or(file.cluster).unwrap_or_default(),
        launch_type,
        subnets: list(args.ecs_subnets).or(file.subnets).unwrap_or_default(),
        security_groups: list(args.ecs_security_groups)
            .or(file.security_groups)
            .unwrap_or_default(),
        execution_role_arn: args
            .ecs_execution_role_arn
            .or(file.execution_role_arn)
            .unwrap_or_default(),
        task_role_arn: args.ecs_task_role_arn.or(file.task_role_arn),
        events_role_arn: args.ecs_events_role_arn.or(file.events_role_arn),
        vpc_id: args.vpc_id.or(file.vpc_id).unwrap_or_default(),
        internal_listener_arn: args
            .elb_internal_listener_arn
            .or(file.elb_internal_listener_arn)
            .unwrap_or_default(),
        external_listener_arn: args
            .elb_external_listener_arn
            .or(file.elb_external_listener_arn),
        internal_zone_id: args
            .route53_internal_zone_id
            .or(file.route53_internal_zone_id)
            .unwrap_or_default(),
        public_zone_id: args.route53_public_zone_id.or(file.route53_public_zone_id),
        rollout_wait: args.ecs_rollout_wait.or(file.rollout_wait).unwrap_or(true),
        rollout_timeout,
        ..EcsConfig::default()
    };
    if let Err(problems) = config.check() {
        bail!("--scheduler ecs: {problems}");
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let err = resolve(EcsArgs::default(), None).unwrap_err().to_string();
        assert!(err.contains("EMPIRE_ECS_CLUSTER is not set"), "{err}");
        assert!(err.contains("EMPIRE_VPC_ID is not set"), "{err}");
    }

    #[test]
    fn flags_beat_the_file() {
        let file: EcsFileConfig = toml::from_str(
            r#"
            cluster = "from-file"
            launch_type = "EC2"
            execution_role_arn = "arn:aws:iam::1:role/exec"
            vpc_id = "vpc-1"
            elb_internal_listener_arn = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/i/1/2"
            elb_external_listener_arn = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/e/1/2"
            route53_internal_zone_id = "Z1"
            rollout_wait = false
            rollout_timeout = "90s"
            "#,
        )
        .unwrap();
        let args = EcsArgs {
            ecs_cluster: Some("from-flag".into()),
            ecs_subnets: Some("subnet-a, subnet-b".into()),
            ..EcsArgs::default()
        };
        let config = resolve(args, Some(file)).unwrap();
        assert_eq!(config.cluster, "from-flag");
        assert_eq!(config.launch_type, LaunchType::Ec2);
        assert_eq!(config.subnets, ["subnet-a", "subnet-b"]);
        assert!(!config.rollout_wait);
        assert_eq!(config.rollout_timeout, Duration::from_secs(90));
    }
}
