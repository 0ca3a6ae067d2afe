//! Waypoints through the training data: a graph of frames the world model was trained on,
//! searched for a path to the goal, so that MPC aims at a point of that path it can reach
//! within its horizon instead of at a goal behind a wall.
//!
//! A planner whose horizon is shorter than the way to the goal minimises the distance to the
//! goal in embedding space, and where the straight line is blocked (reach's wall, with the
//! door off to one side) that distance has a local minimum against the wall: the planner
//! presses into it. The data knows better: its episodes went through the door. The graph
//! (in the spirit of semi-parametric topological memory and search on the replay buffer):
//!
//! - **nodes**: the frames of up to `nodes` training clips, as the world model sees them
//!   (standardised tokens) and mean-pooled for distances;
//! - **edges**: each clip's consecutive frames (one world-model step apart, directed) and
//!   every pair of frames closer than `link` times the median step length (both ways). The
//!   link radius is kept below one step so that frames on either side of a thin wall, close
//!   in embedding space but not one step apart for the agent, are not joined;
//! - **per goal**: Dijkstra from the frames nearest the goal over reversed edges gives each
//!   frame its distance to the goal along the data and its next hop.
//!
//! At a plan, the current frame's nearest node is followed along next hops as far as the
//! planner can go in `reach` steps (`reach` x the 90th percentile of step lengths); that
//! frame's tokens are the planner's goal. When the goal itself is within reach, or the data
//! has no path, the planner aims at the goal as usual.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use anyhow::{Result, ensure};
use burn::prelude::*;
use lam_data::ShardSet;
use lam_model::LatentActionModel;
use serde::{Deserialize, Serialize};

/// How the waypoint graph is built.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WaypointConfig {
    /// Most frames in the graph; clips are taken evenly spread over the set (8000).
    pub nodes: usize,
    /// Link radius for frames of different clips, as a multiple of the median step length
    /// between consecutive frames (0.5).
    pub link: f32,
    /// How far along the path the waypoint is, in world-model steps of typical length (4).
    /// Measured on reach (oracle, horizon 5, 50 episodes): 2 steps 50% (the agent runs out of
    /// time creeping from waypoint to waypoint), 4 steps 86%, 6 steps 84%.
    pub reach: usize,
    /// Line of sight, as a multiple of the median step length (0 turns it off): the waypoint
    /// is also no farther along the path than the last frame whose path from the current
    /// frame stays within this distance of the straight segment between them, so that where
    /// the data's path bends (round the end of a wall) the planner aims at the bend, not
    /// across the wall.
    #[serde(default)]
    pub sight: f32,
}

impl Default for WaypointConfig {
    fn default() -> Self {
        Self {
            nodes: 8000,
            link: 0.5,
            reach: 4,
            sight: 0.0,
        }
    }
}

/// The graph of training frames.
pub struct WaypointGraph {
    /// `[M, N * D]` standardised tokens of each frame.
    tokens: Vec<f32>,
    /// `[M, D]` mean-pooled tokens.
    pooled: Vec<f32>,
    tokens_per_frame: usize,
    dim: usize,
    /// Outgoing and incoming edges `(node, length)`.
    out: Vec<Vec<(u32, f32)>>,
    into: Vec<Vec<(u32, f32)>>,
    /// 90th percentile of the length of one step between consecutive frames.
    step: f32,
    /// Proximity link radius used.
    radius: f32,
    /// Waypoint distance in steps.
    reach: usize,
    /// Line-of-sight tube radius (0: off).
    tube: f32,
}

/// Distances to one goal along the graph.
pub struct GoalMap {
    /// The goal, mean-pooled.
    goal: Vec<f32>,
    /// Per node: length of its shortest path to the goal (infinite when none).
    dist: Vec<f32>,
    /// Per node: the next node on that path and the edge length (`u32::MAX` at the end).
    next: Vec<(u32, f32)>,
}

#[derive(PartialEq)]
struct Entry(f32, u32);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Smallest distance first out of the max-heap.
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// Distance from `p` to the segment from `a` to `b`.
fn segment_distance(p: &[f32], a: &[f32], b: &[f32]) -> f32 {
    let (mut ab2, mut dot) = (0.0f32, 0.0f32);
    for ((p, a), b) in p.iter().zip(a).zip(b) {
        ab2 += (b - a) * (b - a);
        dot += (p - a) * (b - a);
    }
    let t = if ab2 > 0.0 {
        (dot / ab2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    p.iter()
        .zip(a)
        .zip(b)
        .map(|((p, a), b)| {
            let q = a + t * (b - a);
            (p - q) * (p - q)
        })
        .sum::<f32>()
        .sqrt()
}

impl WaypointGraph {
    /// Builds the graph from the clips of `set`, standardised by `lam` as the planner sees
    /// frames.
    pub fn build(set: &ShardSet, lam: &LatentActionModel, cfg: &WaypointConfig) -> Result<Self> {
        let t = set.index.frames;
        let (n, d) = (set.index.tokens, set.index.dim);
        ensure!(t >= 2, "waypoints need clips of at least 2 frames, got {t}");
        ensure!(
            cfg.nodes >= 2 * t
                && cfg.link > 0.0
                && cfg.link.is_finite()
                && cfg.reach >= 1
                && cfg.sight >= 0.0
                && cfg.sight.is_finite(),
            "waypoints: nodes must be at least {}, link positive, reach at least 1 and sight \
             finite and not negative, got {}, {}, {} and {}",
            2 * t,
            cfg.nodes,
            cfg.link,
            cfg.reach,
            cfg.sight
        );
        let clips = set.len().min(cfg.nodes / t);
        ensure!(
            clips >= 2,
            "waypoints: {} has {} clips, need at least 2",
            set.dir.display(),
            set.len()
        );
        let picked: Vec<usize> = (0..clips).map(|k| k * set.len() / clips).collect();
        let m = clips * t;
        let device = lam.world_model.in_proj.weight.device();
        let raw = set.batch(&picked);
        let tokens = lam
            .normalize(Tensor::<3>::from_data(
                TensorData::new(raw, [m, n, d]),
                &device,
            ))
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading standardised frames: {e:?}"))?;
        let mut pooled = vec![0.0f32; m * d];
        for i in 0..m {
            for tok in 0..n {
                let row = &tokens[(i * n + tok) * d..(i * n + tok + 1) * d];
                for (p, v) in pooled[i * d..(i + 1) * d].iter_mut().zip(row) {
                    *p += v / n as f32;
                }
            }
        }
        let node = |i: usize| &pooled[i * d..(i + 1) * d];
        let mut out = vec![Vec::new(); m];
        let mut into = vec![Vec::new(); m];
        let mut steps = Vec::with_capacity(clips * (t - 1));
        for c in 0..clips {
            for k in 0..t - 1 {
                let (a, b) = (c * t + k, c * t + k + 1);
                let w = distance(node(a), node(b));
                out[a].push((b as u32, w));
                into[b].push((a as u32, w));
                steps.push(w);
            }
        }
        steps.sort_by(f32::total_cmp);
        let median = steps[steps.len() / 2];
        let step = steps[(steps.len() * 9 / 10).min(steps.len() - 1)];
        ensure!(
            median > 0.0 && step.is_finite(),
            "waypoints: consecutive frames of {} do not move (median step {median})",
            set.dir.display()
        );
        let radius = cfg.link * median;
        for a in 0..m {
            for b in a + 1..m {
                if a / t == b / t {
                    continue; // same clip: its steps are already edges
                }
                let w = distance(node(a), node(b));
                if w < radius {
                    out[a].push((b as u32, w));
                    into[b].push((a as u32, w));
                    out[b].push((a as u32, w));
                    into[a].push((b as u32, w));
                }
            }
        }
        Ok(Self {
            tokens,
            pooled,
            tokens_per_frame: n,
            dim: d,
            out,
            into,
            step,
            radius,
            reach: cfg.reach,
            tube: cfg.sight * median,
        })
    }

    /// Frames in the graph.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Edges in the graph (each direction counted).
    pub fn edges(&self) -> usize {
        self.out.iter().map(Vec::len).sum()
    }

    /// The 90th percentile of one step's length, in pooled embedding units.
    pub fn step_length(&self) -> f32 {
        self.step
    }

    fn pooled_of(&self, i: usize) -> &[f32] {
        &self.pooled[i * self.dim..(i + 1) * self.dim]
    }

    /// The node nearest to the pooled frame `x` and its distance.
    fn nearest(&self, x: &[f32]) -> (usize, f32) {
        (0..self.len())
            .map(|i| (i, distance(self.pooled_of(i), x)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the graph has nodes")
    }

    /// Mean-pools standardised tokens `[1, N, D]` to a host vector.
    fn pool(&self, frame: &Tensor<3>) -> Result<Vec<f32>> {
        let [_, n, d] = frame.dims();
        ensure!(
            n == self.tokens_per_frame && d == self.dim,
            "waypoints were built from frames of {} x {}, got {n} x {d}",
            self.tokens_per_frame,
            self.dim
        );
        frame
            .clone()
            .mean_dim(1)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading a frame: {e:?}"))
    }

    /// Shortest paths to the goal (standardised tokens `[1, N, D]`) from every node.
    pub fn toward(&self, goal: &Tensor<3>) -> Result<GoalMap> {
        let g = self.pool(goal)?;
        let m = self.len();
        let mut dist = vec![f32::INFINITY; m];
        let mut next = vec![(u32::MAX, 0.0f32); m];
        let mut heap = BinaryHeap::new();
        // The path ends at any frame within the link radius of the goal (or the nearest one,
        // found in the same pass).
        let mut nearest = (0, f32::INFINITY);
        for i in 0..m {
            let w = distance(self.pooled_of(i), &g);
            if w < self.radius {
                dist[i] = w;
                heap.push(Entry(w, i as u32));
            }
            if w < nearest.1 {
                nearest = (i, w);
            }
        }
        if heap.is_empty() {
            let (i, w) = nearest;
            dist[i] = w;
            heap.push(Entry(w, i as u32));
        }
        while let Some(Entry(du, u)) = heap.pop() {
            if du > dist[u as usize] {
                continue;
            }
            for &(v, w) in &self.into[u as usize] {
                let dv = du + w;
                if dv < dist[v as usize] {
                    dist[v as usize] = dv;
                    next[v as usize] = (u, w);
                    heap.push(Entry(dv, v));
                }
            }
        }
        Ok(GoalMap {
            goal: g,
            dist,
            next,
        })
    }

    /// Where to aim from `current` (standardised tokens `[1, N, D]`): the tokens `[1, N, D]`
    /// of the farthest frame along the data's path to the goal within `reach` typical steps,
    /// or `None` to aim at the goal itself (within reach, or no path).
    pub fn waypoint(&self, map: &GoalMap, current: &Tensor<3>) -> Result<Option<Tensor<3>>> {
        let c = self.pool(current)?;
        let (start, gap) = self.nearest(&c);
        let reach = self.step * self.reach as f32;
        if !map.dist[start].is_finite() || (self.tube == 0.0 && gap + map.dist[start] <= reach) {
            return Ok(None);
        }
        // Whether every frame of `path` lies within the tube round the segment from the
        // current frame to `end`.
        let in_sight = |path: &[usize], end: &[f32]| {
            path.iter()
                .all(|&i| segment_distance(self.pooled_of(i), &c, end) <= self.tube)
        };
        let (mut at, mut walked) = (start, gap);
        let mut path = vec![start];
        let mut ended = true;
        while let Some(&(nx, w)) = map.next.get(at).filter(|(nx, _)| *nx != u32::MAX) {
            if walked + w > reach
                || (self.tube > 0.0 && !in_sight(&path, self.pooled_of(nx as usize)))
            {
                ended = false;
                break;
            }
            walked += w;
            at = nx as usize;
            path.push(at);
        }
        if self.tube > 0.0 && ended && in_sight(&path, &map.goal) {
            // The goal itself is in sight along the data's path.
            return Ok(None);
        }
        tracing::debug!(
            "waypoint {} frames along the data's path ({walked:.3} of {reach:.3}): from {c:?} \
             to {:?}, goal {:?}",
            path.len() - 1,
            self.pooled_of(at),
            map.goal
        );
        let nd = self.tokens_per_frame * self.dim;
        let row = self.tokens[at * nd..(at + 1) * nd].to_vec();
        Ok(Some(Tensor::<3>::from_data(
            TensorData::new(row, [1, self.tokens_per_frame, self.dim]),
            &current.device(),
        )))
    }

    /// Length of the data's path from `current` to the goal (embedding units; infinite when
    /// there is none).
    pub fn distance_to_goal(&self, map: &GoalMap, current: &Tensor<3>) -> Result<f32> {
        let c = self.pool(current)?;
        let (start, gap) = self.nearest(&c);
        Ok(gap + map.dist[start])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lam_data::{Clip, ShardWriter, Split};
    use lam_model::LamConfig;

    /// Two rooms of a 10 x 10 arena split by a wall at 4.55 < x < 5.45 with a door at 4 < y < 6; the
    /// "embedding" of a frame is the agent's position. Clips are straight walks of 4 frames
    /// that stop at walls.
    fn two_rooms(dir: &std::path::Path) {
        let mut w = ShardWriter::create(dir, 4, [1, 1], 2, None, 256).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        for id in 0..1500 {
            let mut p = [0.5 + 9.0 * uniform(), 0.5 + 9.0 * uniform()];
            if (p[0] - 5.0).abs() < 0.45 {
                p[0] += 0.9;
            }
            let a = std::f32::consts::TAU * uniform();
            let v = [0.6 * a.cos(), 0.6 * a.sin()];
            let mut emb = Vec::new();
            for _ in 0..4 {
                emb.extend_from_slice(&p);
                let q = [(p[0] + v[0]).clamp(0.3, 9.7), (p[1] + v[1]).clamp(0.3, 9.7)];
                // The wall is 0.9 thick (as reach's wall plus the agent's radius).
                let in_wall = (q[0] - 5.0).abs() < 0.45 && !(q[1] > 4.0 && q[1] < 6.0);
                if !in_wall {
                    p = q;
                }
            }
            w.push(
                Split::Train,
                Clip {
                    embeddings: emb,
                    actions: None,
                    id,
                },
            )
            .unwrap();
        }
        w.finish().unwrap();
    }

    /// The two-room shard set and a tiny model over its 2-D "frames" (its standardisation
    /// is the identity at initialisation).
    fn two_rooms_set() -> (tempfile::TempDir, ShardSet, LatentActionModel) {
        let tmp = tempfile::tempdir().unwrap();
        two_rooms(tmp.path());
        let set = ShardSet::open(tmp.path(), Some(Split::Train)).unwrap();
        let mut cfg = LamConfig::preset("tiny").unwrap();
        cfg.model.embed_dim = 2;
        cfg.model.grid = [1, 1];
        let lam = lam_model::train::init_model(&cfg, &Device::flex());
        (tmp, set, lam)
    }

    fn frame(x: f32, y: f32) -> Tensor<3> {
        Tensor::<3>::from_data(TensorData::new(vec![x, y], [1, 1, 2]), &Device::flex())
    }

    #[test]
    fn the_way_to_a_goal_behind_the_wall_goes_through_the_door() {
        let (_tmp, set, lam) = two_rooms_set();
        let cfg = WaypointConfig {
            reach: 3,
            ..Default::default()
        };
        let graph = WaypointGraph::build(&set, &lam, &cfg).unwrap();
        assert_eq!(graph.len(), 6000);
        assert!(
            (0.5..0.7).contains(&graph.step_length()),
            "{}",
            graph.step_length()
        );

        let goal = frame(8.0, 2.0);
        let map = graph.toward(&goal).unwrap();
        let start = frame(2.0, 2.0);
        // Along the data, the way round the door's corners (7.4), not the straight 6.
        let along = graph.distance_to_goal(&map, &start).unwrap();
        assert!((7.2..9.0).contains(&along), "path length {along}");
        // Three steps of reach: the waypoint is on the way up to the door, still left of it.
        let wp: Vec<f32> = graph
            .waypoint(&map, &start)
            .unwrap()
            .expect("the goal is out of reach")
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(wp[0] < 5.0 && wp[1] > 2.8, "waypoint {wp:?}");
        // From the door the goal's room is next; near the goal, aim at the goal itself.
        let wp: Vec<f32> = graph
            .waypoint(&map, &frame(4.6, 5.0))
            .unwrap()
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(wp[0] > 5.0, "waypoint {wp:?}");
        assert!(graph.waypoint(&map, &frame(7.5, 2.5)).unwrap().is_none());
        // A frame of another size is named.
        let e = graph
            .toward(&Tensor::<3>::zeros([1, 2, 2], &Device::flex()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("1 x 2"), "{e}");
    }

    #[test]
    fn line_of_sight_stops_the_waypoint_at_the_door() {
        let (_tmp, set, lam) = two_rooms_set();
        let waypoint = |sight: f32, from: Tensor<3>| {
            let cfg = WaypointConfig {
                reach: 30,
                sight,
                ..Default::default()
            };
            let graph = WaypointGraph::build(&set, &lam, &cfg).unwrap();
            let map = graph.toward(&frame(8.0, 2.0)).unwrap();
            graph
                .waypoint(&map, &from)
                .unwrap()
                .map(|t| t.into_data().try_into_vec::<f32>().unwrap())
        };
        // Thirty steps of reach without a line of sight: the goal's own room.
        let far = waypoint(0.0, frame(2.0, 2.0));
        assert!(far.as_ref().is_none_or(|w| w[0] > 5.0), "{far:?}");
        // With it: where the path turns, before the door, on the start's side of the wall.
        let wp = waypoint(1.0, frame(2.0, 2.0)).expect("the goal is not in sight");
        assert!(
            wp[0] < 5.5 && (3.0..5.0).contains(&wp[1]),
            "waypoint {wp:?}"
        );
        // In the goal's room the goal is in sight.
        assert!(waypoint(1.0, frame(7.0, 3.5)).is_none());
    }
}
