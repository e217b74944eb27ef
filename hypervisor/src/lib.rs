//! A bare-metal, type-1, paravirtualizing hypervisor for x86-64.
#![cfg_attr(not(test), no_std)]

pub mod exit;
