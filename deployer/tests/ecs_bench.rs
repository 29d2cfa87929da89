//! The ECS benchmark behind bench/ecs-calls.sh (ignored by `cargo test`): AWS calls per
//! deploy by kind for apps of 1, 5 and 20 process types, first deploy and unchanged
//! redeploy, and deploy wall time against moto with the calls overlapped versus one at a
//! time (the recording proxy forwards them one by one), with moto's own latency and with
//! 50 ms added to each call as a stand-in for AWS's.

mod ecs_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ecs_common::{Account, Call, Recorder, mutating, sdk_config, suffix};
use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::scheduler::{DeploySpec, ProcessSpec, Scheduler};
use empire_deployer::ecs::aws::Clients;
use empire_deployer::ecs::{EcsScheduler, LaunchType};

fn spec(app: &AppName, processes: usize) -> DeploySpec {
    let mut list = vec![{
        let mut web = ProcessSpec::new("web", Some("httpd -f -p $PORT".into()), 2);
        web.healthcheck = Some("/health".into());
        web
    }];
    for i in 1..processes {
        list.push(ProcessSpec::new(
            format!("worker{i}"),
            Some(format!("worker --queue {i}")),
            1,
        ));
    }
    DeploySpec {
        app: app.clone(),
        release: 1,
        image: "registry.test/bench@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        config: BTreeMap::from([
            ("DATABASE_URL".into(), "postgres://db/bench".into()),
            ("SECRET_KEY".into(), "s3cr3t".into()),
            ("RAILS_ENV".into(), "production".into()),
        ]),
        processes: list,
    }
}

fn by_kind(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for call in calls {
        *kinds.entry(call.action.clone()).or_default() += 1;
    }
    kinds
}

fn summary(kinds: &BTreeMap<String, usize>) -> String {
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn timed(scheduler: &EcsScheduler, spec: &DeploySpec) -> Duration {
    let started = Instant::now();
    scheduler.deploy(spec, &Progress::null()).await.unwrap();
    started.elapsed()
}

#[tokio::test]
#[ignore = "a benchmark: bench/ecs-calls.sh runs it"]
async fn bench_ecs_calls() {
    let reps: usize = std::env::var("EMPIRE_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let account = Account::create(LaunchType::Fargate).await;
    let recorder = Recorder::start(account.moto.clone()).await;
    let clients = Clients::new(&sdk_config(&recorder.url()).await);
    let scheduler = EcsScheduler::with_clients(account.config.clone(), clients, Some("us-east-1"))
        .await
        .unwrap();

    println!("\n## AWS calls per deploy\n");
    println!("| process types | deploy | calls | of which change something | by kind |");
    println!("| --- | --- | --- | --- | --- |");
    for n in [1usize, 5, 20] {
        let app = AppName::new(&format!("b{}", suffix())).unwrap();
        let spec = spec(&app, n);
        recorder.take();
        scheduler.deploy(&spec, &Progress::null()).await.unwrap();
        let first = recorder.take();
        scheduler.deploy(&spec, &Progress::null()).await.unwrap();
        let again = recorder.take();
        for (label, calls) in [("first", &first), ("unchanged redeploy", &again)] {
            let changes = calls.iter().filter(|c| mutating(&c.action)).count();
            println!(
                "| {n} | {label} | {} | {changes} | {} |",
                calls.len(),
                summary(&by_kind(calls))
            );
        }
    }

    println!("\n## Deploy wall time, median of {reps} (ms)\n");
    println!(
        "| process types | added latency per call | deploy | overlapped | one by one | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for latency in [Duration::ZERO, Duration::from_millis(50)] {
        for n in [1usize, 5, 20] {
            let mut rows: BTreeMap<&str, (Vec<Duration>, Vec<Duration>)> = BTreeMap::new();
            for _ in 0..reps {
                for serialize in [false, true] {
                    recorder.set_mode(serialize, latency);
                    let app = AppName::new(&format!("b{}", suffix())).unwrap();
                    let spec = spec(&app, n);
                    let first = timed(&scheduler, &spec).await;
                    let again = timed(&scheduler, &spec).await;
                    recorder.set_mode(false, Duration::ZERO);
                    scheduler.remove_app(&app).await.unwrap();
                    for (label, d) in [("first", first), ("unchanged redeploy", again)] {
                        let entry = rows.entry(label).or_default();
                        if serialize {
                            entry.1.push(d);
                        } else {
                            entry.0.push(d);
                        }
                    }
                }
            }
            for (label, (mut overlapped, mut sequential)) in rows {
                overlapped.sort();
                sequential.sort();
                let o = overlapped[overlapped.len() / 2];
                let s = sequential[sequential.len() / 2];
                println!(
                    "| {n} | {} ms | {label} | {} | {} | {:.2} |",
                    latency.as_millis(),
                    o.as_millis(),
                    s.as_millis(),
                    o.as_secs_f64() / s.as_secs_f64()
                );
            }
        }
    }
}
