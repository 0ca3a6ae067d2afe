//! Anti-aliased top-down rendering with tiny-skia. Everything that cannot
//! move (floor, texture, zones, walls) is drawn once per episode into a base
//! layer; a frame copies it and draws the objects, distractors and agent.

use crate::domain::AgentShape;
use crate::nuisances::{Look, Texture};
use crate::scene::{ARENA, BodyState, Layout, ObjectShape, SimState};
use tiny_skia::{Color, FillRule, Paint, Path, PathBuilder, Pixmap, Rect, Transform};

/// Smallest and largest frame side accepted.
pub const MIN_SIZE: u32 = 16;
/// See [`MIN_SIZE`].
pub const MAX_SIZE: u32 = 512;

/// Checks a frame side: even (video encoders need it) and within bounds.
pub fn check_size(size: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        (MIN_SIZE..=MAX_SIZE).contains(&size) && size.is_multiple_of(2),
        "frame size {size} is not supported: it must be even and between {MIN_SIZE} and {MAX_SIZE}"
    );
    Ok(())
}

/// Renders the frames of one episode.
pub struct Renderer {
    size: u32,
    base: Pixmap,
    frame: Pixmap,
    /// World to pixel: x' = s * x + tx, y' = -s * y + ty.
    scale: f32,
    tx: f32,
    ty: f32,
    objects: Vec<(ObjectShape, [u8; 3])>,
    look: Look,
    agent: AgentShape,
}

fn paint(c: [u8; 3]) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c[0], c[1], c[2], 255);
    p.anti_alias = true;
    p
}

fn shade(c: [u8; 3], d: [i16; 3]) -> [u8; 3] {
    [0, 1, 2].map(|k| (c[k] as i16 + d[k]).clamp(0, 255) as u8)
}

impl Renderer {
    /// A renderer for `layout` seen with `look`, at `size` x `size` pixels
    /// (`size` must pass [`check_size`]).
    pub fn new(size: u32, layout: &Layout, look: &Look, agent: AgentShape) -> Self {
        let cam = &look.camera;
        let scale = size as f32 / ARENA * cam.zoom;
        let c = ARENA / 2.0;
        let tx = size as f32 / 2.0 - scale * (c + cam.offset[0]);
        let ty = size as f32 / 2.0 + scale * (c + cam.offset[1]);
        let mut r = Self {
            size,
            base: Pixmap::new(size, size).expect("frame size checked by check_size"),
            frame: Pixmap::new(size, size).expect("frame size checked by check_size"),
            scale,
            tx,
            ty,
            objects: layout
                .objects
                .iter()
                .map(|o| (o.shape, shade(o.color, look.object_shade)))
                .collect(),
            look: look.clone(),
            agent,
        };
        r.draw_base(layout);
        r
    }

    /// Frame side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    fn px(&self, p: [f32; 2]) -> (f32, f32) {
        (self.scale * p[0] + self.tx, -self.scale * p[1] + self.ty)
    }

    fn rect(&self, lo: [f32; 2], hi: [f32; 2]) -> Option<Rect> {
        let (x0, y1) = self.px(lo);
        let (x1, y0) = self.px(hi);
        Rect::from_ltrb(x0, y0, x1, y1)
    }

    fn polygon(&self, pts: &[[f32; 2]], pose: &BodyState) -> Option<Path> {
        let (s, c) = pose.angle.sin_cos();
        let mut pb = PathBuilder::new();
        for (i, p) in pts.iter().enumerate() {
            let w = [
                pose.pos[0] + c * p[0] - s * p[1],
                pose.pos[1] + s * p[0] + c * p[1],
            ];
            let (x, y) = self.px(w);
            if i == 0 {
                pb.move_to(x, y)
            } else {
                pb.line_to(x, y)
            }
        }
        pb.close();
        pb.finish()
    }

    fn circle(&self, center: [f32; 2], r: f32) -> Option<Path> {
        let (x, y) = self.px(center);
        PathBuilder::from_circle(x, y, r * self.scale)
    }

    fn fill(target: &mut Pixmap, path: Option<Path>, c: [u8; 3]) {
        if let Some(p) = path {
            target.fill_path(
                &p,
                &paint(c),
                FillRule::Winding,
                Transform::identity(),
                None,
            );
        }
    }

    fn shape_path(&self, shape: ObjectShape, pose: &BodyState) -> Option<Path> {
        match shape {
            ObjectShape::Disc { r } => self.circle(pose.pos, r),
            other => self.polygon(&other.outline(), pose),
        }
    }

    fn draw_base(&mut self, layout: &Layout) {
        let mut base = std::mem::replace(&mut self.base, Pixmap::new(1, 1).expect("1x1 pixmap"));
        let f = self.look.floor;
        base.fill(Color::from_rgba8(f[0], f[1], f[2], 255));
        match &self.look.texture {
            Some(Texture::Checker { cell, color }) => {
                let n = (ARENA / cell).ceil() as i32 + 2;
                for i in -1..n {
                    for j in -1..n {
                        if (i + j) % 2 == 0 {
                            let lo = [i as f32 * cell, j as f32 * cell];
                            let hi = [lo[0] + cell, lo[1] + cell];
                            if let Some(r) = self.rect(lo, hi) {
                                base.fill_rect(r, &paint(*color), Transform::identity(), None);
                            }
                        }
                    }
                }
            }
            Some(Texture::Stripes { width, color }) => {
                let n = (ARENA / width).ceil() as i32 + 2;
                for i in (-1..n).step_by(2) {
                    let lo = [i as f32 * width, -1.0];
                    let hi = [lo[0] + width, ARENA + 1.0];
                    if let Some(r) = self.rect(lo, hi) {
                        base.fill_rect(r, &paint(*color), Transform::identity(), None);
                    }
                }
            }
            None => {}
        }
        for z in &layout.zones {
            match z.ghost {
                Some((shape, angle)) => {
                    let pose = BodyState {
                        pos: z.center,
                        angle,
                        ..Default::default()
                    };
                    Self::fill(&mut base, self.shape_path(shape, &pose), z.color);
                }
                None => Self::fill(&mut base, self.circle(z.center, z.radius), z.color),
            }
        }
        for w in &layout.walls {
            let lo = [w.center[0] - w.half[0], w.center[1] - w.half[1]];
            let hi = [w.center[0] + w.half[0], w.center[1] + w.half[1]];
            if let Some(r) = self.rect(lo, hi) {
                base.fill_rect(r, &paint(self.look.wall), Transform::identity(), None);
            }
        }
        self.base = base;
    }

    /// Draws `state` and writes the frame as RGB bytes (row-major, `size *
    /// size * 3`) into `out`.
    pub fn render_into(&mut self, state: &SimState, out: &mut [u8]) {
        let mut frame = std::mem::replace(&mut self.frame, Pixmap::new(1, 1).expect("1x1 pixmap"));
        frame.data_mut().copy_from_slice(self.base.data());
        for ((shape, color), pose) in self.objects.iter().zip(&state.objects) {
            Self::fill(&mut frame, self.shape_path(*shape, pose), *color);
        }
        for (spec, s) in self.look.distractors.iter().zip(&state.distractors) {
            let path = if spec.square {
                let h = spec.size;
                self.polygon(&[[-h, -h], [h, -h], [h, h], [-h, h]], s)
            } else {
                self.circle(s.pos, spec.size)
            };
            Self::fill(&mut frame, path, spec.color);
        }
        let a = &state.agent;
        match self.agent {
            AgentShape::Disc { radius } => {
                Self::fill(&mut frame, self.circle(a.pos, radius), self.look.agent_rim);
                Self::fill(
                    &mut frame,
                    self.circle(a.pos, radius * 0.72),
                    self.look.agent,
                );
            }
            AgentShape::RoundSquare { half, round } => {
                Self::fill(
                    &mut frame,
                    self.polygon(&round_square(half, round), a),
                    self.look.agent_rim,
                );
                Self::fill(
                    &mut frame,
                    self.polygon(&round_square(half * 0.8, round * 0.6), a),
                    self.look.agent,
                );
            }
        }
        for (dst, src) in out.chunks_exact_mut(3).zip(frame.data().chunks_exact(4)) {
            dst.copy_from_slice(&src[..3]);
        }
        self.frame = frame;
    }
}

/// Outline of a square with rounded corners (4 points per corner arc).
fn round_square(half: f32, round: f32) -> Vec<[f32; 2]> {
    let mut pts = Vec::with_capacity(16);
    for (k, (cx, cy)) in [(half, half), (-half, half), (-half, -half), (half, -half)]
        .into_iter()
        .enumerate()
    {
        for i in 0..4 {
            let a = (k as f32 + i as f32 / 3.0) * std::f32::consts::FRAC_PI_2;
            pts.push([cx + round * a.cos(), cy + round * a.sin()]);
        }
    }
    pts
}
