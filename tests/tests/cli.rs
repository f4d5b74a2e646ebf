//! The `xlvs` command line refuses bad input with a message that names the
//! problem, and exits non-zero without touching the system.

use std::process::{Command, Output};

fn xlvs(args: &[&str]) -> Output {
    Command::new(tests::xlvs::xlvs_bin()).args(args).output().expect("run xlvs")
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("xlvs-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

fn refused(args: &[&str]) -> String {
    let out = xlvs(args);
    assert!(!out.status.success(), "xlvs {args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "xlvs {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SERVICE: &str = "[[virtual]]\naddress = \"10.100.0.100:80\"\nforward = \"nat\"\n[[virtual.real]]\naddress = \"10.0.1.11:8080\"\n";

#[test]
fn an_unknown_interface_is_named() {
    let path = config_file("iface", &format!("[director]\ninterfaces = [\"xlvs-nosuch0\"]\n{SERVICE}"));
    let socket = std::env::temp_dir().join(format!("xlvs-cli-{}.sock", std::process::id()));
    let err = refused(&["run", "-c", path.to_str().unwrap(), "--socket", socket.to_str().unwrap()]);
    assert!(err.contains("interface 'xlvs-nosuch0' not found"), "{err}");
    assert!(err.contains("director.interfaces"), "{err}");
    assert!(!socket.exists(), "a refused run must not leave its socket");
    std::fs::remove_file(path).ok();
}

#[test]
fn a_bad_config_names_file_line_and_key() {
    let path = config_file("weight", &format!("[director]\ninterfaces = [\"lo\"]\n{SERVICE}weight = 70000\n"));
    let err = refused(&["run", "-c", path.to_str().unwrap(), "--socket", "/nonexistent/x.sock"]);
    let expected = format!("{}:8: virtual[0].real[0].weight: 70000 is out of range", path.display());
    assert!(err.contains(&expected), "{err}");
    std::fs::remove_file(path).ok();
}

#[test]
fn a_missing_config_file_is_named() {
    let err = refused(&["run", "-c", "/nonexistent/xlvs.toml"]);
    assert!(err.contains("/nonexistent/xlvs.toml") && err.contains("cannot read"), "{err}");
}

#[test]
fn list_without_a_director_says_so() {
    let err = refused(&["list", "-n", "--socket", "/nonexistent/xlvs.sock"]);
    assert!(err.contains("no director answers on /nonexistent/xlvs.sock"), "{err}");
}
