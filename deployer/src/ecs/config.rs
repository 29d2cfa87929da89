//! The operator's settings of the `ecs` backend and what the gateway finds out about them
//! at start-up.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How ECS places tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LaunchType {
    /// On the cluster's container instances, in bridge networking with dynamic host ports.
    Ec2,
    /// On Fargate, in awsvpc networking in the configured subnets.
    #[default]
    Fargate,
}

impl LaunchType {
    /// The name ECS uses (`EC2`, `FARGATE`).
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchType::Ec2 => "EC2",
            LaunchType::Fargate => "FARGATE",
        }
    }

    /// Parses `EC2` or `FARGATE` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_uppercase().as_str() {
            "EC2" => Some(LaunchType::Ec2),
            "FARGATE" => Some(LaunchType::Fargate),
            _ => None,
        }
    }
}

impl fmt::Display for LaunchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The AWS pieces the gateway works inside (`EMPIRE_ECS_*`, `EMPIRE_ELB_*`,
/// `EMPIRE_ROUTE53_*`). Region and credentials come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsConfig {
    /// `EMPIRE_ECS_CLUSTER`: the cluster services run in.
    pub cluster: String,
    /// `EMPIRE_ECS_LAUNCH_TYPE`.
    pub launch_type: LaunchType,
    /// `EMPIRE_ECS_SUBNETS`: where awsvpc tasks get their network interface.
    pub subnets: Vec<String>,
    /// `EMPIRE_ECS_SECURITY_GROUPS`: the security groups of awsvpc tasks.
    pub security_groups: Vec<String>,
    /// `EMPIRE_ECS_EXECUTION_ROLE_ARN`: lets ECS pull images, read the config
    /// parameters and write logs.
    pub execution_role_arn: String,
    /// The role tasks run as, if any (`EMPIRE_ECS_TASK_ROLE_ARN`).
    pub task_role_arn: Option<String>,
    /// The role EventBridge uses to start the tasks of `cron` processes
    /// (`EMPIRE_ECS_EVENTS_ROLE_ARN`); needed only by apps with `cron` processes.
    pub events_role_arn: Option<String>,
    /// `EMPIRE_VPC_ID`: the VPC of the target groups.
    pub vpc_id: String,
    /// `EMPIRE_ELB_INTERNAL_LISTENER_ARN`: the listener `<app>.<internal domain>` rules go on.
    pub internal_listener_arn: String,
    /// `EMPIRE_ELB_EXTERNAL_LISTENER_ARN`: the internet-facing listener custom domains go on.
    pub external_listener_arn: Option<String>,
    /// `EMPIRE_ROUTE53_INTERNAL_ZONE_ID`: the private zone; its domain is the internal domain.
    pub internal_zone_id: String,
    /// `EMPIRE_ROUTE53_PUBLIC_ZONE_ID`: where custom domains get records, if given.
    pub public_zone_id: Option<String>,
    /// `EMPIRE_ECS_ROLLOUT_WAIT`: follow each deployment to its end (default) or return
    /// once the services are updated.
    pub rollout_wait: bool,
    /// How long a deployment may take before the deploy fails and is rolled back (10 min).
    pub rollout_timeout: Duration,
    /// How often a rollout is polled (5 s).
    pub rollout_poll: Duration,
    /// How long new web tasks may fail load-balancer health checks after they start (60 s).
    pub health_check_grace: Duration,
    /// How long a target group drains connections to a stopping task (30 s).
    pub deregistration_delay: Duration,
    /// How long the app log groups keep events, in days (`None`: forever).
    pub log_retention_days: Option<i32>,
    /// Give awsvpc tasks a public IP (for public subnets without a NAT gateway).
    pub assign_public_ip: bool,
}

impl Default for EcsConfig {
    fn default() -> Self {
        EcsConfig {
            cluster: String::new(),
            launch_type: LaunchType::Fargate,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            execution_role_arn: String::new(),
            task_role_arn: None,
            events_role_arn: None,
            vpc_id: String::new(),
            internal_listener_arn: String::new(),
            external_listener_arn: None,
            internal_zone_id: String::new(),
            public_zone_id: None,
            rollout_wait: true,
            rollout_timeout: Duration::from_secs(600),
            rollout_poll: Duration::from_secs(5),
            health_check_grace: Duration::from_secs(60),
            deregistration_delay: Duration::from_secs(30),
            log_retention_days: None,
            assign_public_ip: false,
        }
    }
}

impl EcsConfig {
    /// Names every missing or malformed setting, by its environment variable, or `Ok`.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut missing = |value: &str, name: &str| {
            if value.trim().is_empty() {
                problems.push(format!("{name} is not set"));
            }
        };
        missing(&self.cluster, "EMPIRE_ECS_CLUSTER");
        missing(&self.execution_role_arn, "EMPIRE_ECS_EXECUTION_ROLE_ARN");
        missing(&self.vpc_id, "EMPIRE_VPC_ID");
        missing(
            &self.internal_listener_arn,
            "EMPIRE_ELB_INTERNAL_LISTENER_ARN",
        );
        missing(
            self.external_listener_arn.as_deref().unwrap_or(""),
            "EMPIRE_ELB_EXTERNAL_LISTENER_ARN",
        );
        missing(&self.internal_zone_id, "EMPIRE_ROUTE53_INTERNAL_ZONE_ID");
        if self.launch_type == LaunchType::Fargate {
            if self.subnets.is_empty() {
                problems.push("EMPIRE_ECS_SUBNETS is not set (FARGATE needs subnets)".into());
            }
            if self.security_groups.is_empty() {
                problems.push(
                    "EMPIRE_ECS_SECURITY_GROUPS is not set (FARGATE needs security groups)".into(),
                );
            }
        }
        let arn = |value: &str, name: &str, service: &str, problems: &mut Vec<String>| {
            if !value.is_empty() && parse_arn(value).is_none_or(|a| a.service != service) {
                problems.push(format!("{name} {value:?} is not an {service} ARN"));
            }
        };
        arn(
            &self.execution_role_arn,
            "EMPIRE_ECS_EXECUTION_ROLE_ARN",
            "iam",
            &mut problems,
        );
        arn(
            &self.internal_listener_arn,
            "EMPIRE_ELB_INTERNAL_LISTENER_ARN",
            "elasticloadbalancing",
            &mut problems,
        );
        if let Some(external) = &self.external_listener_arn {
            arn(
                external,
                "EMPIRE_ELB_EXTERNAL_LISTENER_ARN",
                "elasticloadbalancing",
                &mut problems,
            );
        }
        if let Some(role) = &self.events_role_arn {
            arn(role, "EMPIRE_ECS_EVENTS_ROLE_ARN", "iam", &mut problems);
        }
        for subnet in &self.subnets {
            if !subnet.starts_with("subnet-") {
                problems.push(format!("EMPIRE_ECS_SUBNETS: {subnet:?} is not a subnet id"));
            }
        }
        for group in &self.security_groups {
            if !group.starts_with("sg-") {
                problems.push(format!(
                    "EMPIRE_ECS_SECURITY_GROUPS: {group:?} is not a security group id"
                ));
            }
        }
        if self.rollout_timeout.is_zero() {
            problems.push("the rollout timeout must be more than 0s".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The parts of an ARN (`arn:partition:service:region:account:resource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, …
    pub partition: &'a str,
    /// `iam`, `ecs`, …
    pub service: &'a str,
    /// The region (empty for IAM).
    pub region: &'a str,
    /// The account id.
    pub account: &'a str,
    /// Everything after the account.
    pub resource: &'a str,
}

/// Splits an ARN into its parts.
pub fn parse_arn(text: &str) -> Option<Arn<'_>> {
    let mut parts = text.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let arn = Arn {
        partition: parts.next()?,
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    };
    (!arn.partition.is_empty() && !arn.service.is_empty() && !arn.resource.is_empty())
        .then_some(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_what_is_missing() {
        let err = EcsConfig::default().check().unwrap_err();
        for name in [
            "EMPIRE_ECS_CLUSTER",
            "EMPIRE_ECS_EXECUTION_ROLE_ARN",
            "EMPIRE_VPC_ID",
            "EMPIRE_ELB_INTERNAL_LISTENER_ARN",
            "EMPIRE_ELB_EXTERNAL_LISTENER_ARN",
            "EMPIRE_ROUTE53_INTERNAL_ZONE_ID",
            "EMPIRE_ECS_SUBNETS",
            "EMPIRE_ECS_SECURITY_GROUPS",
        ] {
            assert!(err.contains(name), "{name} missing from {err}");
        }
        let config = EcsConfig {
            cluster: "c".into(),
            subnets: vec!["subnet-1".into()],
            security_groups: vec!["nope".into()],
            execution_role_arn: "arn:aws:iam::123456789012:role/exec".into(),
            vpc_id: "vpc-1".into(),
            internal_listener_arn: "arn:aws:ecs:us-east-1:1:listener/x".into(),
            external_listener_arn: Some(
                "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/e/1/2".into(),
            ),
            internal_zone_id: "Z1".into(),
            ..Default::default()
        };
        let err = config.check().unwrap_err();
        assert!(
            err.contains("EMPIRE_ELB_INTERNAL_LISTENER_ARN")
                && err.contains("elasticloadbalancing"),
            "{err}"
        );
        assert!(err.contains("\"nope\" is not a security group id"), "{err}");
        assert!(!err.contains("EMPIRE_ECS_CLUSTER"), "{err}");
    }

    #[test]
    fn ec2_needs_no_subnets() {
        let config = EcsConfig {
            cluster: "c".into(),
            launch_type: LaunchType::Ec2,
            execution_role_arn: "arn:aws:iam::123456789012:role/exec".into(),
            vpc_id: "vpc-1".into(),
            internal_listener_arn: "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/i/1/2"
                .into(),
            external_listener_arn: Some(
                "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/e/1/2".into(),
            ),
            internal_zone_id: "Z1".into(),
            ..Default::default()
        };
        assert_eq!(config.check(), Ok(()));
        assert_eq!(LaunchType::parse("fargate"), Some(LaunchType::Fargate));
        assert_eq!(LaunchType::parse("ec2"), Some(LaunchType::Ec2));
        assert_eq!(LaunchType::parse("lambda"), None);
    }

    #[test]
    fn parses_arns() {
        let arn =
            parse_arn("arn:aws:elasticloadbalancing:eu-west-1:123:listener/app/a/b/c").unwrap();
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "123");
        assert_eq!(arn.resource, "listener/app/a/b/c");
        assert!(parse_arn("nope").is_none());
    }
}
