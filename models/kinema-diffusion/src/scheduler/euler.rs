//! Flow-matching Euler (diffusers' `FlowMatchEulerDiscreteScheduler` with a static
//! `shift`): `x_next = x + (sigma_next - sigma) * v`. Timesteps are fractional
//! (`sigma * num_train_timesteps`, f32).

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct FlowMatchEulerConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub stochastic_sampling: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
}

impl Default for FlowMatchEulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            invert_sigmas: false,
            shift_terminal: None,
            stochastic_sampling: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
        }
    }
}

impl FlowMatchEulerConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.use_dynamic_shifting
            || self.invert_sigmas
            || self.shift_terminal.is_some()
            || self.stochastic_sampling
            || self.use_karras_sigmas
            || self.use_exponential_sigmas
            || self.use_beta_sigmas
        {
            return Err("only the static-shift deterministic Euler schedule is supported".into());
        }
        if self.num_train_timesteps == 0 || self.shift <= 0.0 {
            return Err("num_train_timesteps and shift must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct FlowMatchEuler {
    pub config: FlowMatchEulerConfig,
    /// `num_steps + 1` sigmas, the last 0.
    pub sigmas: Vec<f32>,
    pub timesteps: Vec<f32>,
    step_index: usize,
}

impl FlowMatchEuler {
    pub fn new(
        config: FlowMatchEulerConfig,
        num_inference_steps: usize,
    ) -> std::result::Result<Self, String> {
        config.validate()?;
        if num_inference_steps == 0 {
            return Err("num_inference_steps must be at least 1".into());
        }
        let n_train = config.num_train_timesteps;
        // the constructor's training sigmas are shifted in f32; their ends bound the schedule
        let shift32 = config.shift as f32;
        let shift_f32 = |s: f32| shift32 * s / (1.0 + (shift32 - 1.0) * s);
        // the first training sigma is 1000 / 1000 = 1
        let sigma_max = shift_f32(1.0) as f64;
        let sigma_min = shift_f32(1.0f32 / n_train as f32) as f64;
        let (start, stop) = (sigma_max * n_train as f64, sigma_min * n_train as f64);
        let n = num_inference_steps;
        let step = if n > 1 {
            (stop - start) / (n - 1) as f64
        } else {
            0.0
        };
        let shift = config.shift;
        let mut sigmas: Vec<f32> = (0..n)
            .map(|i| {
                let t = if n > 1 && i == n - 1 {
                    stop
                } else {
                    i as f64 * step + start
                };
                let s = t / n_train as f64;
                (shift * s / (1.0 + (shift - 1.0) * s)) as f32
            })
            .collect();
        let timesteps = sigmas.iter().map(|s| s * n_train as f32).collect();
        sigmas.push(0.0);
        Ok(Self {
            config,
            sigmas,
            timesteps,
            step_index: 0,
        })
    }

    pub fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let i = self.step_index;
        if i >= self.num_steps() {
            candle_core::bail!("euler: all {} steps already taken", self.num_steps());
        }
        let dt = self.sigmas[i + 1] - self.sigmas[i];
        self.step_index += 1;
        sample + (model_output * dt as f64)?
    }
}
