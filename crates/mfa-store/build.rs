//! Rebuild when a migration changes: they are embedded with
//! `diesel_migrations::embed_migrations!`.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
