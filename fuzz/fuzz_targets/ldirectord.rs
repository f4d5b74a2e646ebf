//! `lb_user::ldirectord::import` over any text: never a panic, and what it
//! imports is a valid xlvs config (`Imported::config` promises it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) = lb_user::ldirectord::import("fuzz.cf", text) {
        let toml = imported.toml();
        let parsed = lb_user::config::parse("imported.toml", &toml)
            .unwrap_or_else(|e| panic!("the imported config does not parse: {e}\n{toml}"));
        assert_eq!(
            parsed, imported.config,
            "import/render/parse round trip\n{toml}"
        );
    }
});
