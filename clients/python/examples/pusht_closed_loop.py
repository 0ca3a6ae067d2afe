"""Closes the loop between `lam serve` and gym-pusht (the PushT task DINO-WM and
LeWorldModel report on) and prints the success rate.

    pip install ./clients/python gym-pusht
    # an MPC server (goal images) ...
    lam serve --run RUN --encoder ENC --controller CTRL --domain robot --planner cem &
    python3 clients/python/examples/pusht_closed_loop.py --episodes 10
    # ... or a LAWM policy server (instructions)
    lam serve --lawm LAWM_RUN --domain robot --instruction pusht &
    python3 clients/python/examples/pusht_closed_loop.py --episodes 10

Per episode: reset the environment; for an MPC server, render the goal image (the T block at
the task's goal pose, the agent beside it) and send it with `reset`; for a LAWM server send
the instruction. Then at every step send the 96 x 96 RGB observation (the server resizes it
to its model's size) and apply the returned action. gym-pusht's action is the agent's
absolute target position in [0, 512]^2, while lam's simulated suite acts with displacements
in [-1, 1]^2 (`--domain robot`); the action is therefore applied as
`target = agent_pos + step_scale * action`, clipped to the board. An episode succeeds when the
environment reports `is_success` (95% coverage of the goal region) within its step budget.

A model trained only on lam's simulated suite has never seen PushT's renderings, so expect
a low success rate until the run is trained on PushT frames (e.g. a LeRobot PushT dataset
embedded with `lam embed`).
"""

import argparse
import time

import numpy as np

from lam_client import LamClient


def goal_image(env, seed):
    """The observation with the block at the goal pose and the agent off to one side."""
    env.reset(seed=seed)  # the goal pose is set up on reset
    gx, gy, gth = env.unwrapped.goal_pose
    obs, _ = env.reset(seed=seed, options={"reset_to_state": [gx - 150.0, gy + 150.0, gx, gy, gth]})
    return obs["pixels"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8765")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=300, help="step budget per episode")
    ap.add_argument("--step-scale", type=float, default=40.0,
                    help="pixels of agent target displacement per unit of action")
    ap.add_argument("--instruction", default="pusht", help="LAWM servers: the instruction")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import gymnasium as gym
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", render_mode="rgb_array",
                   max_episode_steps=args.max_steps)
    client = LamClient(args.url)
    info = client.info()
    mpc = info["model"] == "mpc"
    print(f"server: {info['model']} model, action dim {info['action']['dim']}, "
          f"image size {info['image']['size']}")
    if info["action"]["dim"] != 2:
        raise SystemExit(f"PushT takes 2-D actions; the server's model emits {info['action']['dim']}-D")

    successes, latencies = 0, []
    for ep in range(args.episodes):
        seed = args.seed + ep
        if mpc:
            client.reset(goal=goal_image(env, seed), seed=seed)
        else:
            client.reset(instruction=args.instruction, seed=seed)
        obs, _ = env.reset(seed=seed)
        success, steps = False, 0
        for steps in range(1, args.max_steps + 1):
            reply = client.act(obs["pixels"], state=obs["agent_pos"])
            latencies.append(reply["timing"]["total_ms"])
            target = obs["agent_pos"] + args.step_scale * reply["action"].astype(np.float64)
            obs, _, terminated, truncated, step_info = env.step(np.clip(target, 0.0, 512.0))
            if step_info.get("is_success", False):
                success = True
                break
            if terminated or truncated:
                break
        successes += success
        print(f"episode {ep}: {'success' if success else 'failure'} after {steps} steps, "
              f"coverage {step_info.get('coverage', float('nan')):.2f}")
    lat = np.asarray(latencies)
    print(f"success rate {successes}/{args.episodes} = {successes / args.episodes:.2f}; "
          f"act latency p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms")
    client.close()


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.0f} s")
