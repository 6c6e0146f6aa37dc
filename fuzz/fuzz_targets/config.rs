//! Fuzz target: the config file parser and the layered loader never panic on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = common::conf::parse_file("fuzz.conf", text);
    let schema = common::conf::Schema {
        keys: &["broker", "client_id", "entities", "heartbeat_interval"],
        switches: &["--check-config"],
        env_prefix: "RPI_CLIENT_",
        default_path: "fuzz.conf",
    };
    let args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let _ = common::conf::load(
        &schema,
        &args,
        &[],
        |_| Ok(text.to_owned()),
        |k, v| match k {
            "heartbeat_interval" => common::duration::parse_duration(v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            "client_id" => common::ClientId::new(v).map(|_| ()).map_err(|e| e.to_string()),
            _ => Ok(()),
        },
    );
});
