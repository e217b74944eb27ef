//! Links the demo domU with guest-pv-shim's linker script (the build
//! script all guests on the shim share).

include!("../guest-pv-shim/link-guest.rs");
