//! Choosing what runs next. For now one physical CPU runs the vCPUs of one
//! domain, round robin among those that are up; the weighted scheduler
//! across domains comes with more domains.
#![forbid(unsafe_code)]

use crate::vcpu::Vcpu;

/// The vCPU to run after `current`: the next one that is up, counting on
/// from `current` and wrapping round (so `current` itself when it is the
/// only one up); `None` when none is up.
pub fn next_vcpu(vcpus: &[Vcpu], current: usize) -> Option<usize> {
    let n = vcpus.len();
    (1..=n)
        .map(|step| (current + step) % n)
        .find(|&i| vcpus[i].is_up())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcpu::Power;

    fn vcpus(up: &[bool]) -> Vec<Vcpu> {
        up.iter()
            .enumerate()
            .map(|(i, &up)| {
                let mut v = Vcpu::new(u32::try_from(i).unwrap());
                if up {
                    v.power = Power::Up;
                }
                v
            })
            .collect()
    }

    #[test]
    fn round_robin_over_the_vcpus_that_are_up() {
        let v = vcpus(&[true, false, true, true]);
        assert_eq!(next_vcpu(&v, 0), Some(2));
        assert_eq!(next_vcpu(&v, 2), Some(3));
        assert_eq!(next_vcpu(&v, 3), Some(0));
        assert_eq!(next_vcpu(&v, 1), Some(2));
        let alone = vcpus(&[false, true]);
        assert_eq!(next_vcpu(&alone, 1), Some(1));
        assert_eq!(next_vcpu(&vcpus(&[false, false]), 0), None);
        assert_eq!(next_vcpu(&[], 0), None);
    }
}
