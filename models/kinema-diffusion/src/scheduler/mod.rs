//! Flow-matching schedulers: UniPC multistep (Wan's default) and Euler.

mod euler;
mod unipc;

use candle_core::{Result, Tensor};

pub use euler::{FlowMatchEuler, FlowMatchEulerConfig};
pub use unipc::{UniPcConfig, UniPcMultistep};

/// Classifier-free guidance: `uncond + scale * (cond - uncond)`.
pub fn cfg_combine(cond: &Tensor, uncond: &Tensor, scale: f64) -> Result<Tensor> {
    uncond + ((cond - uncond)? * scale)?
}

/// A scheduler config as a Diffusers `scheduler_config.json` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    UniPc(UniPcConfig),
    Euler(FlowMatchEulerConfig),
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json` text, dispatching on `_class_name`.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let class = v.get("_class_name").and_then(|c| c.as_str()).unwrap_or("");
        let cfg = match class {
            "UniPCMultistepScheduler" => {
                Self::UniPc(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?)
            }
            "FlowMatchEulerDiscreteScheduler" => {
                Self::Euler(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?)
            }
            other => return Err(format!("unsupported scheduler {other:?}")),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Self::UniPc(c) => c.validate(),
            Self::Euler(c) => c.validate(),
        }
    }

    /// The flow shift (`flow_shift` / `shift`).
    pub fn shift(&self) -> f64 {
        match self {
            Self::UniPc(c) => c.flow_shift,
            Self::Euler(c) => c.shift,
        }
    }

    /// The same scheduler with another flow shift (`flow_shift` / `shift`).
    pub fn with_shift(mut self, shift: f64) -> Self {
        match &mut self {
            Self::UniPc(c) => c.flow_shift = shift,
            Self::Euler(c) => c.shift = shift,
        }
        self
    }

    pub fn build(&self, steps: usize) -> std::result::Result<FlowScheduler, String> {
        Ok(match self {
            Self::UniPc(c) => FlowScheduler::UniPc(UniPcMultistep::new(c.clone(), steps)?),
            Self::Euler(c) => FlowScheduler::Euler(FlowMatchEuler::new(c.clone(), steps)?),
        })
    }
}

/// A scheduler set up for one run.
#[derive(Debug, Clone)]
pub enum FlowScheduler {
    UniPc(UniPcMultistep),
    Euler(FlowMatchEuler),
}

impl FlowScheduler {
    /// The timestep handed to the model at each step.
    pub fn timesteps(&self) -> Vec<f32> {
        match self {
            Self::UniPc(s) => s.timesteps.iter().map(|&t| t as f32).collect(),
            Self::Euler(s) => s.timesteps.clone(),
        }
    }

    pub fn sigmas(&self) -> &[f32] {
        match self {
            Self::UniPc(s) => &s.sigmas,
            Self::Euler(s) => &s.sigmas,
        }
    }

    pub fn num_steps(&self) -> usize {
        match self {
            Self::UniPc(s) => s.num_steps(),
            Self::Euler(s) => s.num_steps(),
        }
    }

    /// Advances `sample` by one step given the model's (guided) flow prediction.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        match self {
            Self::UniPc(s) => s.step(model_output, sample),
            Self::Euler(s) => s.step(model_output, sample),
        }
    }
}
