//! The evaluation protocol is fixed and solvable.

use lam_sim::{BUDGET, Domain, GOAL_OFFSET, Task, eval_protocol};

#[test]
fn protocol_is_deterministic_and_expert_actions_solve_it() {
    for task in Task::ALL {
        let a = eval_protocol(task, Domain::Robot, 3, 32).unwrap();
        let b = eval_protocol(task, Domain::Robot, 3, 32).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.seed, y.seed);
            assert!(x.goal_frame == y.goal_frame && x.start_frame == y.start_frame);
            assert_eq!(x.expert_actions.len(), GOAL_OFFSET as usize);
            assert_eq!(x.budget, BUDGET);
            // Replaying the expert's actions reaches the goal.
            let mut t = 0;
            let out = x
                .run(|_env| {
                    let a = x.expert_actions.get(t).cloned().unwrap_or(vec![0.0, 0.0]);
                    t += 1;
                    Ok(a)
                })
                .unwrap();
            assert!(
                out.success,
                "{task} seed {}: replayed expert actions miss the goal ({out:?})",
                x.seed
            );
            // Standing still does not meet a goal the expert had to travel to.
            let idle = x.run(|env| Ok(env.action_space().zero())).unwrap();
            assert!(
                !idle.success || out.steps == 0,
                "{task} seed {}: idling meets the goal",
                x.seed
            );
        }
    }
}
