//! The connection-sync decoder (`lb_user::sync::wire::decode`), fed what
//! any host on the sync network may send: never a panic, and a message it
//! accepts encodes back to one that decodes the same.
#![no_main]

use lb_user::sync::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((sync_id, entries)) = decode(data) {
        let again = decode(&encode(sync_id, &entries)).expect("an encoded message decodes");
        assert_eq!(again, (sync_id, entries));
    }
});
