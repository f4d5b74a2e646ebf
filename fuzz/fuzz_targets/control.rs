//! The control socket's request decoding (`serde_json` into
//! `lb_user::control::Request`): never a panic, and a request survives a
//! round trip.
#![no_main]

use lb_user::control::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let json = serde_json::to_vec(&request).expect("a request serialises");
        let again: Request = serde_json::from_slice(&json).expect("a serialised request decodes");
        assert_eq!(again, request);
    }
});
