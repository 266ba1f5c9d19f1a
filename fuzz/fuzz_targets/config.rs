//! Config files: any text either loads or yields errors that each carry a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracegate::config::{Env, load};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = load(text, "fuzz.yaml", &Env::default()) {
        assert!(errors.0.iter().all(|e| !e.message.is_empty()));
    }
});
