//! A stand-in for `empire hook pre-receive`: the pre-receive hook program the gitd
//! integration tests point their repositories at. It runs exactly what the `empire`
//! binary runs for `empire hook pre-receive`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["hook", "pre-receive"] {
        eprintln!("usage: hook hook pre-receive (got {args:?})");
        std::process::exit(2);
    }
    std::process::exit(empire_gitd::hook::run_pre_receive_hook());
}
