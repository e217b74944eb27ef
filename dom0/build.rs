//! Links dom0 with guest-pv-shim's linker script (the build
//! script all guests on the shim share).

include!("../guest-pv-shim/link-guest.rs");
