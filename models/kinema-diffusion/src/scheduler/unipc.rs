//! UniPC multistep (predictor `bh1`/`bh2` with the UniC corrector) on flow sigmas with
//! flow-prediction models, as diffusers' `UniPCMultistepScheduler` with
//! `use_flow_sigmas=True, prediction_type="flow_prediction", predict_x0=True` — the
//! configuration every Wan 2.1 checkpoint ships. Scalar coefficients are computed in
//! f32 like the reference (its sigmas are an f32 tensor).

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    pub solver_order: usize,
    pub flow_shift: f64,
    pub lower_order_final: bool,
    pub disable_corrector: Vec<usize>,
    pub solver_type: String,
    pub prediction_type: String,
    pub use_flow_sigmas: bool,
    pub predict_x0: bool,
    pub final_sigmas_type: String,
    pub use_dynamic_shifting: bool,
    pub thresholding: bool,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            solver_order: 2,
            flow_shift: 3.0,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_type: "bh2".into(),
            prediction_type: "flow_prediction".into(),
            use_flow_sigmas: true,
            predict_x0: true,
            final_sigmas_type: "zero".into(),
            use_dynamic_shifting: false,
            thresholding: false,
        }
    }
}

impl UniPcConfig {
    /// What this port implements; anything else is refused at load time.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !self.use_flow_sigmas || self.prediction_type != "flow_prediction" {
            return Err("only use_flow_sigmas with flow_prediction is supported".into());
        }
        if !self.predict_x0 {
            return Err("only predict_x0=true is supported".into());
        }
        if self.solver_type != "bh1" && self.solver_type != "bh2" {
            return Err(format!("unknown solver_type {:?}", self.solver_type));
        }
        if self.final_sigmas_type != "zero" {
            return Err("only final_sigmas_type=\"zero\" is supported".into());
        }
        if self.use_dynamic_shifting || self.thresholding {
            return Err("dynamic shifting and thresholding are not supported".into());
        }
        if self.solver_order == 0 || self.solver_order > 3 {
            return Err(format!("solver_order {} not in 1..=3", self.solver_order));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct UniPcMultistep {
    pub config: UniPcConfig,
    /// `num_steps + 1` sigmas, the last 0.
    pub sigmas: Vec<f32>,
    /// The model's timestep at each step: `int(sigma * num_train_timesteps)`, truncated.
    pub timesteps: Vec<i64>,
    model_outputs: Vec<Option<Tensor>>,
    last_sample: Option<Tensor>,
    lower_order_nums: usize,
    this_order: usize,
    step_index: usize,
}

fn lambda(sigma: f32) -> f32 {
    // alpha = 1 - sigma, lambda = log(alpha) - log(sigma)
    (1.0 - sigma).ln() - sigma.ln()
}

/// Solves `a x = b` (row-major n x n) by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, piv);
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            for (dst, src) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *dst -= f * src;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

impl UniPcMultistep {
    pub fn new(
        config: UniPcConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, String> {
        config.validate()?;
        if num_inference_steps == 0 {
            return Err("num_inference_steps must be at least 1".into());
        }
        let n_train = config.num_train_timesteps as f64;
        let n = num_inference_steps;
        // np.linspace(1, 1/N, n + 1)[:-1], in f64
        let start = 1.0f64;
        let end = 1.0 / n_train;
        let step = (end - start) / n as f64;
        let mut sig: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        let shift = config.flow_shift;
        for s in sig.iter_mut() {
            *s = shift * *s / (1.0 + (shift - 1.0) * *s);
        }
        if (sig[0] - 1.0).abs() < 1e-6 {
            sig[0] -= 1e-6;
        }
        let timesteps = sig.iter().map(|s| (s * n_train) as i64).collect();
        let mut sigmas: Vec<f32> = sig.iter().map(|&s| s as f32).collect();
        sigmas.push(0.0);
        let order = config.solver_order;
        Ok(Self {
            config,
            sigmas,
            timesteps,
            model_outputs: vec![None; order],
            last_sample: None,
            lower_order_nums: 0,
            this_order: 0,
            step_index: 0,
        })
    }

    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    pub fn step_index(&self) -> usize {
        self.step_index
    }

    /// The `b` vector and `hh, h_phi_1, B_h` for an update of `order` from lambda
    /// difference `h`.
    fn coefficients(&self, h: f32, order: usize) -> (f32, f32, f32, Vec<f32>) {
        let hh = -h; // predict_x0
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial_i = 1.0f32;
        let b_h = if self.config.solver_type == "bh1" {
            hh
        } else {
            hh.exp_m1()
        };
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial_i / b_h);
            factorial_i *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i;
        }
        (hh, h_phi_1, b_h, b)
    }

    fn rks_d1s(
        &self,
        s0_index: usize,
        offset: usize,
        order: usize,
        h: f32,
        m0: &Tensor,
    ) -> Result<(Vec<f32>, Vec<Tensor>)> {
        let lambda_s0 = lambda(self.sigmas[s0_index]);
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let si = self.step_index - (i + offset);
            let len = self.model_outputs.len();
            let Some(mi) = &self.model_outputs[len - 1 - i] else {
                candle_core::bail!("unipc: missing model output {i} steps back");
            };
            let rk = (lambda(self.sigmas[si]) - lambda_s0) / h;
            d1s.push(((mi - m0)? / rk as f64)?);
            rks.push(rk);
        }
        rks.push(1.0);
        Ok((rks, d1s))
    }

    fn predictor(&self, sample: &Tensor, order: usize) -> Result<Tensor> {
        let Some(m0) = self.model_outputs.last().cloned().flatten() else {
            candle_core::bail!("unipc: predictor without a model output");
        };
        let i = self.step_index;
        let (sigma_t, sigma_s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let (rks, d1s) = self.rks_d1s(i, 0, order, h, &m0)?;
        let (_hh, h_phi_1, b_h, b) = self.coefficients(h, order);
        let x_t_ = ((sample * (sigma_t / sigma_s0) as f64)? - (&m0 * (alpha_t * h_phi_1) as f64)?)?;
        if d1s.is_empty() {
            return Ok(x_t_);
        }
        let rhos_p: Vec<f32> = if order == 2 {
            vec![0.5]
        } else {
            let k = order - 1;
            let r: Vec<Vec<f64>> = (0..k)
                .map(|p| (0..k).map(|c| (rks[c] as f64).powi(p as i32)).collect())
                .collect();
            solve(r, b[..k].iter().map(|&v| v as f64).collect())
                .into_iter()
                .map(|v| v as f32)
                .collect()
        };
        let mut pred_res = (&d1s[0] * rhos_p[0] as f64)?;
        for (d, r) in d1s.iter().zip(&rhos_p).skip(1) {
            pred_res = (pred_res + (d * *r as f64)?)?;
        }
        x_t_ - (pred_res * (alpha_t * b_h) as f64)?
    }

    fn corrector(&self, model_t: &Tensor, last_sample: &Tensor, order: usize) -> Result<Tensor> {
        let Some(m0) = self.model_outputs.last().cloned().flatten() else {
            candle_core::bail!("unipc: corrector without a model output");
        };
        let i = self.step_index;
        let (sigma_t, sigma_s0) = (self.sigmas[i], self.sigmas[i - 1]);
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let (rks, d1s) = self.rks_d1s(i - 1, 1, order, h, &m0)?;
        // rks for the corrector index from step_index - (i + 1); rks_d1s with
        // s0_index = i - 1 and offset 1 gives exactly that.
        let (_hh, h_phi_1, b_h, b) = self.coefficients(h, order);
        let x_t_ =
            ((last_sample * (sigma_t / sigma_s0) as f64)? - (&m0 * (alpha_t * h_phi_1) as f64)?)?;
        let rhos_c: Vec<f32> = if order == 1 {
            vec![0.5]
        } else {
            let r: Vec<Vec<f64>> = (0..order)
                .map(|p| (0..order).map(|c| (rks[c] as f64).powi(p as i32)).collect())
                .collect();
            solve(r, b.iter().map(|&v| v as f64).collect())
                .into_iter()
                .map(|v| v as f32)
                .collect()
        };
        let d1_t = (model_t - &m0)?;
        let mut res = (d1_t * *rhos_c.last().unwrap_or(&0.5) as f64)?;
        for (d, r) in d1s.iter().zip(&rhos_c) {
            res = (res + (d * *r as f64)?)?;
        }
        x_t_ - (res * (alpha_t * b_h) as f64)?
    }

    /// One step: `model_output` is the (guided) flow prediction at the current step's
    /// timestep for `sample`; returns the sample for the next step.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let i = self.step_index;
        if i >= self.num_steps() {
            candle_core::bail!("unipc: all {} steps already taken", self.num_steps());
        }
        // convert_model_output: x0 = sample - sigma * v
        let sigma = self.sigmas[i];
        let converted = (sample - (model_output * sigma as f64)?)?;
        let use_corrector = i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(&converted, last, self.this_order)?,
            _ => sample.clone(),
        };
        let order = self.config.solver_order;
        self.model_outputs.rotate_left(1);
        self.model_outputs[order - 1] = Some(converted);
        let this_order = if self.config.lower_order_final {
            order.min(self.num_steps() - i)
        } else {
            order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predictor(&sample, self.this_order)?;
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index += 1;
        Ok(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_flow_sigmas_and_truncated_timesteps() {
        let s = UniPcMultistep::new(UniPcConfig::default(), 3).unwrap();
        assert_eq!(s.timesteps, vec![999, 857, 600]);
        assert_eq!(s.sigmas.len(), 4);
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
        assert!((s.sigmas[0] - (1.0 - 1e-6)).abs() < 1e-7);
    }

    #[test]
    fn solve_small_system() {
        let x = solve(vec![vec![1.0, 1.0], vec![0.5, 1.0]], vec![3.0, 2.0]);
        assert!((x[0] - 2.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12);
    }
}
