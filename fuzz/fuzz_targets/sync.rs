//! The connection-sync decoder (`lb_user::sync::wire::decode`), fed what
//! any host on the sync network may send: never a panic, and a message it
//! accepts encodes back to messages (one, or more when it was larger than
//! a datagram the encoder makes) that decode to the same entries.
#![no_main]

use lb_user::sync::wire::{MAX_MESSAGE_LEN, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((sync_id, entries)) = decode(data) {
        let mut again = Vec::new();
        for message in encode(sync_id, &entries) {
            assert!(message.len() <= MAX_MESSAGE_LEN);
            let (id, more) = decode(&message).expect("an encoded message decodes");
            assert_eq!(id, sync_id);
            again.extend(more);
        }
        assert_eq!(again, entries);
    }
});
