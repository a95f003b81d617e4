//! A model's batching policy, and the one place its defaults are resolved: each key comes from
//! the model's `[batching]` table, else from the server's flags, else from the device's default,
//! else from the built-in default. The flags are `None` unless given, so a default is never
//! mistaken for a choice.

use std::time::Duration;

use aicp_core::Batching;

/// How a model's requests are queued and batched: its `[batching]` table with the defaults
/// filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The most samples in one engine run; 0 when the model does not batch (each request then
    /// runs alone, exactly as it came).
    pub max_batch_size: usize,
    /// Whether concurrent requests are merged into one engine run.
    pub dynamic: bool,
    pub max_queue_delay: Duration,
    pub preferred_batch_sizes: Vec<usize>,
    /// How long an idle instance polls its queue before it sleeps.
    pub idle_poll: Duration,
    pub instances: usize,
    pub max_queue_size: usize,
}

/// Where a model's instances run, for the defaults that differ: where its engine computes.
pub use aicp_engine::registry::Device;

/// The built-in defaults, for keys that neither the model nor the flags set.
pub mod defaults {
    pub const MAX_BATCH_SIZE: usize = 1024;
    pub const MAX_QUEUE_SIZE: usize = 1024;
    pub const IDLE_POLL_US: u64 = 500;
    pub const MAX_QUEUE_DELAY_US: u64 = 0;

    /// On a GPU, a batch costs about the same up to thousands of samples, so a model takes
    /// large ones...
    pub const GPU_MAX_BATCH_SIZE: usize = 8192;
    /// ...and a request waits up to 100 us for others to join its batch...
    pub const GPU_MAX_QUEUE_DELAY_US: u64 = 100;
    /// ...and two instances (two CUDA streams) overlap one batch's copies with another's
    /// kernels.
    pub const GPU_INSTANCES: usize = 2;

    /// One engine instance per two cores (at least one), each running one intra-op thread: the
    /// engines never take more than half the machine, and the front ends (HTTP parsing, JSON,
    /// gRPC) keep the other half. Fewer instances also means larger batches under load.
    pub fn cpu_instances() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }
}

impl Policy {
    /// The policy for a model on `device`: each key from its `[batching]` table (`model`), else
    /// from the server's flags (`flags`, whose keys are `None` unless given), else the device's
    /// default, else the built-in one. `batched` says whether the model has a batch dimension
    /// (without one, `max_batch_size` is 0 and each request runs alone). Fails on values a
    /// model.toml or a flag may get wrong.
    pub fn resolve(
        model: Option<&Batching>,
        flags: &Batching,
        device: Device,
        batched: bool,
    ) -> Result<Self, String> {
        let empty = Batching::default();
        let model = model.unwrap_or(&empty);
        let gpu = device == Device::Gpu;
        let max_batch_size = match model.max_batch_size.or(flags.max_batch_size) {
            Some(0) => return Err("model.toml [batching] max_batch_size must be at least 1".into()),
            _ if !batched => 0,
            configured if gpu => configured.unwrap_or(defaults::GPU_MAX_BATCH_SIZE),
            configured => configured.unwrap_or(defaults::MAX_BATCH_SIZE),
        };
        let preferred_batch_sizes = if model.preferred_batch_sizes.is_empty() {
            flags.preferred_batch_sizes.clone()
        } else {
            model.preferred_batch_sizes.clone()
        };
        let policy = Self {
            max_batch_size,
            dynamic: first(model.dynamic, flags.dynamic, None, true),
            max_queue_delay: Duration::from_micros(first(
                model.max_queue_delay_us,
                flags.max_queue_delay_us,
                gpu.then_some(defaults::GPU_MAX_QUEUE_DELAY_US),
                defaults::MAX_QUEUE_DELAY_US,
            )),
            preferred_batch_sizes,
            idle_poll: Duration::from_micros(first(
                model.idle_poll_us,
                flags.idle_poll_us,
                None,
                defaults::IDLE_POLL_US,
            )),
            instances: first(
                model.instances,
                flags.instances,
                gpu.then_some(defaults::GPU_INSTANCES),
                defaults::cpu_instances(),
            ),
            max_queue_size: first(
                model.max_queue_size,
                flags.max_queue_size,
                None,
                defaults::MAX_QUEUE_SIZE,
            ),
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Whether requests are merged: dynamic batching on, for a model with a batch dimension.
    pub fn merges(&self) -> bool {
        self.dynamic && self.max_batch_size > 0
    }

    /// Checks the values a model.toml may get wrong.
    fn validate(&self) -> Result<(), String> {
        if self.instances == 0 {
            return Err("model.toml [batching] instances must be at least 1".into());
        }
        if self.max_queue_size == 0 {
            return Err("model.toml [batching] max_queue_size must be at least 1".into());
        }
        if let Some(size) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&s| s == 0 || (self.max_batch_size > 0 && s > self.max_batch_size))
        {
            return Err(format!(
                "model.toml [batching] preferred_batch_sizes: {size} is not between 1 and max_batch_size ({})",
                self.max_batch_size
            ));
        }
        Ok(())
    }
}

/// The first of: the model's key, the server's flag, the device's default, the built-in one.
fn first<T>(model: Option<T>, flag: Option<T>, device_default: Option<T>, default: T) -> T {
    model.or(flag).or(device_default).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(model: &Batching, flags: &Batching, device: Device) -> Policy {
        Policy::resolve(Some(model), flags, device, true).unwrap()
    }

    #[test]
    fn each_key_comes_from_the_model_then_the_flags_then_the_default() {
        let model = Batching {
            max_queue_delay_us: Some(50),
            ..Batching::default()
        };
        let flags = Batching {
            dynamic: Some(false),
            max_queue_delay_us: Some(10),
            instances: Some(3),
            ..Batching::default()
        };
        let policy = resolve(&model, &flags, Device::Cpu);
        assert_eq!(policy.max_queue_delay, Duration::from_micros(50));
        assert!(!policy.dynamic && !policy.merges());
        assert_eq!(policy.instances, 3);
        assert_eq!(policy.max_queue_size, defaults::MAX_QUEUE_SIZE);
        assert_eq!(policy.max_batch_size, defaults::MAX_BATCH_SIZE);
        assert_eq!(
            policy.idle_poll,
            Duration::from_micros(defaults::IDLE_POLL_US)
        );
    }

    #[test]
    fn a_gpu_takes_its_defaults_when_no_flag_or_model_key_is_given() {
        let none = Batching::default();
        let gpu = resolve(&none, &none, Device::Gpu);
        assert_eq!(gpu.max_batch_size, defaults::GPU_MAX_BATCH_SIZE);
        assert_eq!(
            gpu.max_queue_delay,
            Duration::from_micros(defaults::GPU_MAX_QUEUE_DELAY_US)
        );
        assert_eq!(gpu.instances, defaults::GPU_INSTANCES);
        let cpu = resolve(&none, &none, Device::Cpu);
        assert_eq!(cpu.max_batch_size, defaults::MAX_BATCH_SIZE);
        assert_eq!(cpu.max_queue_delay, Duration::ZERO);
        assert_eq!(cpu.instances, defaults::cpu_instances());
    }

    #[test]
    fn a_flag_given_wins_over_the_gpu_default_and_a_model_key_over_both() {
        let flags = Batching {
            max_queue_delay_us: Some(0),
            instances: Some(1),
            max_batch_size: Some(64),
            ..Batching::default()
        };
        let gpu = resolve(&Batching::default(), &flags, Device::Gpu);
        assert_eq!(gpu.max_queue_delay, Duration::ZERO);
        assert_eq!(gpu.instances, 1);
        assert_eq!(gpu.max_batch_size, 64);
        let model = Batching {
            max_queue_delay_us: Some(250),
            ..Batching::default()
        };
        let gpu = resolve(&model, &flags, Device::Gpu);
        assert_eq!(gpu.max_queue_delay, Duration::from_micros(250));
    }

    #[test]
    fn a_model_without_a_batch_dimension_runs_each_request_alone() {
        let none = Batching::default();
        let policy = Policy::resolve(None, &none, Device::Gpu, false).unwrap();
        assert_eq!(policy.max_batch_size, 0);
        assert!(!policy.merges());
    }

    #[test]
    fn values_a_model_toml_gets_wrong_are_refused_with_the_key() {
        let none = Batching::default();
        let bad = |model: Batching| Policy::resolve(Some(&model), &none, Device::Cpu, true);
        let err = bad(Batching {
            preferred_batch_sizes: vec![2048],
            ..Batching::default()
        })
        .unwrap_err();
        assert!(err.contains("preferred_batch_sizes: 2048"), "{err}");
        let err = bad(Batching {
            max_batch_size: Some(0),
            ..Batching::default()
        })
        .unwrap_err();
        assert!(err.contains("max_batch_size"), "{err}");
        let err = bad(Batching {
            instances: Some(0),
            ..Batching::default()
        })
        .unwrap_err();
        assert!(err.contains("instances"), "{err}");
    }
}
