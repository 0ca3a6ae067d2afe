//! Scripted experts meet their goal in at least 90% of a fixed set of seeds.

use lam_sim::{Domain, ExpertConfig, Task, expert_rollout};

fn success_rate(task: Task, domain: Domain, seeds: std::ops::Range<u64>) -> f32 {
    let n = seeds.end - seeds.start;
    let ok = seeds
        .filter(|&s| {
            expert_rollout(task, domain, s, &ExpertConfig::default())
                .unwrap()
                .0
        })
        .count();
    ok as f32 / n as f32
}

#[test]
fn expert_success_at_least_90_percent_robot() {
    for task in Task::ALL {
        let r = success_rate(task, Domain::Robot, 100..120);
        assert!(r >= 0.9, "{task}/robot expert success {r}");
    }
}

#[test]
fn expert_success_at_least_90_percent_other_domains() {
    for domain in [Domain::RobotPolar, Domain::Human] {
        for task in Task::ALL {
            let r = success_rate(task, domain, 200..210);
            assert!(r >= 0.9, "{task}/{domain} expert success {r}");
        }
    }
}
