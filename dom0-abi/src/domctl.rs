//! `domctl` and `sysctl`: toolstack interfaces (numbers only for now).
//!
//! Both start with `{u32 cmd; u32 interface_version}`; a version other than
//! the constants below gives `EACCES`, and a caller that is not the control
//! domain gets `EPERM`. This project will define its own domain-building
//! operations in the same shape.

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_DOMCTL_hypercall_init`: fill a domain's hypercall page (the
/// toolstack issues it for the `HYPERCALL_PAGE` note).
pub const XEN_DOMCTL_HYPERCALL_INIT: u32 = 22;
