//! `lb_user::config::parse` over any text: it must answer (a config or an
//! error naming the line), never panic; and a config it accepts must render
//! to a file that parses back to the same config (`xlvs check` promises
//! it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = lb_user::config::parse("fuzz.toml", text) {
        let rendered = lb_user::config::render(&config);
        let again = lb_user::config::parse("rendered.toml", &rendered)
            .unwrap_or_else(|e| panic!("the rendered config does not parse: {e}\n{rendered}"));
        assert_eq!(again, config, "render/parse round trip\n{rendered}");
    }
});
