//! The bootable hypervisor image: everything lives in the library; this
//! binary only links it (the boot code and the panic handler come with it).
#![no_std]
#![no_main]

use hypervisor as _;
