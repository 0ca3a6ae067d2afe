//! Physics sanity: pushing moves objects, walls stop the agent.

use lam_sim::scene::{ARENA, WALL};
use lam_sim::{Domain, Env, Task};

#[test]
fn pushing_moves_the_box_and_free_motion_does_not() {
    let mut env = Env::new(Task::Push, Domain::Robot, 5, 64).unwrap();
    // Put the agent just left of the box and drive right through it.
    let mut s = env.state().clone();
    let box0 = s.objects[0].pos;
    s.agent.pos = [box0[0] - 1.3, box0[1]];
    s.objects[0].angle = 0.0;
    env.set_state(&s).unwrap();
    for _ in 0..10 {
        env.step(&[1.0, 0.0]).unwrap();
    }
    let box1 = env.state().objects[0].pos;
    assert!(
        box1[0] - box0[0] > 1.0,
        "box moved only {:.3} to the right",
        box1[0] - box0[0]
    );
    assert!(
        (box1[1] - box0[1]).abs() < 0.5,
        "box drifted {:.3} sideways",
        box1[1] - box0[1]
    );
    // Without contact the box stays where it is (damping brings it to rest).
    for _ in 0..10 {
        env.step(&[-1.0, 0.0]).unwrap();
    }
    let rest = env.state().objects[0].pos;
    for _ in 0..10 {
        env.step(&[0.0, 0.0]).unwrap();
    }
    let still = env.state().objects[0].pos;
    assert!(
        (still[0] - rest[0]).abs() < 1e-3 && (still[1] - rest[1]).abs() < 1e-3,
        "box moves without contact"
    );
}

#[test]
fn walls_stop_the_agent() {
    for domain in Domain::ALL {
        let mut env = Env::new(Task::Reach, domain, 2, 64).unwrap();
        let (right, up) = match domain {
            Domain::RobotPolar => (vec![1.0, 0.0], vec![1.0, std::f32::consts::FRAC_PI_2]),
            _ => (vec![1.0, 0.0], vec![0.0, 1.0]),
        };
        for _ in 0..60 {
            env.step(&up).unwrap();
        }
        let half = domain.agent().shape.half_width();
        let top = env.state().agent.pos[1];
        assert!(
            top <= ARENA - WALL - half + 0.05,
            "{domain}: agent went through the top wall (y = {top})"
        );
        assert!(
            top > ARENA - WALL - half - 0.1,
            "{domain}: agent stopped short of the top wall (y = {top})"
        );
        // The middle wall of `reach` blocks the way between rooms away from the door.
        let door_lo = env.layout().walls[4].center[1] + env.layout().walls[4].half[1];
        let door_hi = env.layout().walls[5].center[1] - env.layout().walls[5].half[1];
        let y = env.state().agent.pos[1];
        let mut s = env.state().clone();
        if (door_lo..door_hi).contains(&y) {
            s.agent.pos[1] = 1.0;
        }
        s.agent.pos[0] = 2.0;
        s.agent.vel = [0.0, 0.0];
        env.set_state(&s).unwrap();
        for _ in 0..40 {
            env.step(&right).unwrap();
        }
        let x = env.state().agent.pos[0];
        assert!(
            x < ARENA / 2.0 - 0.15 - half + 0.05,
            "{domain}: agent passed the middle wall (x = {x})"
        );
    }
}

#[test]
fn actions_are_clipped_and_wrong_lengths_rejected() {
    let mut env = Env::new(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let info = env.step(&[5.0, f32::NAN]).unwrap();
    assert_eq!(info.action, vec![1.0, 0.0]);
    let err = env.step(&[0.0]).unwrap_err().to_string();
    assert!(err.contains("1 components") && err.contains("2"), "{err}");
}
