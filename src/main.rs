fn main() {
    std::process::exit(convscope::cli::main());
}
