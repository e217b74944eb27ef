//! The dom0 domain builder: the pure layout arithmetic ([`layout`]); the
//! machine side is `arch::x86_64::builder`.
pub mod layout;
