//! Bad input, table by table: the standalone file, the Kubernetes settings file,
//! AddressPools (at admission and in the controller), Service annotations and specs, and
//! lbctl's arguments, clusters that lack what `kubernetes --check` asks for, files that are not regular files or are far too large, and gossip
//! key files. Every bad input must be refused with a message, condition or event
//! that names the problem, and none may crash anything or lose state that existed
//! before it (the running configuration, IPAM allocations). Each table also holds valid
//! controls that must pass.
//!
//! `cargo test -p lb-agent --test integration bad_input -- --nocapture` prints one
//! `BAD-INPUT <category>: N cases` line per category and the total.

mod bounds;
mod cluster;
mod files;
mod host;
mod key_files;
mod lbctl;
mod pools;
mod services;
mod standalone;
mod table;

use std::{path::Path, process::Command};

use table::{count, summary};

/// `lb-agent kubernetes` as node1's agent in `xdplb-system`, with the settings file
/// `settings`.
fn kubernetes_agent(settings: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lb-agent"));
    command
        .args([
            "kubernetes",
            "--node",
            "node1",
            "--namespace",
            "xdplb-system",
        ])
        .arg("--settings")
        .arg(settings);
    command
}

#[tokio::test]
async fn standalone_files_are_refused_and_the_running_one_stays() {
    standalone::run().await;
}

#[test]
fn kubernetes_settings_are_refused() {
    standalone::run_settings();
}

#[test]
fn bad_address_pools_are_refused_at_admission() {
    pools::run_admission();
}

#[test]
fn bad_address_pools_get_conditions_and_keep_allocations() {
    pools::run_controller();
}

#[tokio::test]
async fn bad_annotations_get_conditions_and_events_and_keep_allocations() {
    services::run("service-annotations", services::annotation_cases()).await;
}

#[tokio::test]
async fn bad_service_specs_get_conditions_and_events_and_keep_allocations() {
    services::run("service-specs", services::spec_cases()).await;
}

#[test]
fn service_specs_the_data_path_cannot_serve_are_noted() {
    services::run_translate();
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused_at_once() {
    files::run_table();
}

#[test]
fn numbers_outside_their_range_are_refused_at_their_line() {
    bounds::run();
}

#[test]
fn what_the_host_cannot_give_is_refused_at_its_line() {
    host::run();
}

#[test]
fn check_and_start_refuse_alike() {
    host::run_binary();
}

#[test]
fn kubernetes_check_and_start_refuse_alike() {
    host::run_kubernetes_binary();
}

#[test]
fn bad_gossip_key_files_are_placed_at_their_line_and_refused() {
    key_files::run();
}

#[test]
fn the_agent_refuses_a_bad_key_file_as_a_bad_configuration() {
    key_files::run_binary();
}

#[tokio::test]
async fn what_the_cluster_does_not_give_the_agent_is_reported_item_by_item() {
    cluster::run().await;
}

#[test]
fn bad_lbctl_arguments_are_refused() {
    lbctl::run();
}

/// The suite's size per category, for RELIABILITY.md.
#[test]
fn at_least_sixty_bad_inputs() {
    let translate = services::translate_cases();
    let categories = [
        ("standalone-config", standalone::counts()),
        (
            "kubernetes-settings",
            count(standalone::settings_cases().iter().map(|case| &case.2)),
        ),
        ("addresspools", pools::counts()),
        (
            "service-annotations",
            services::counts(&services::annotation_cases()),
        ),
        ("service-specs", {
            let (a, b) = services::counts(&services::spec_cases());
            let (c, d) = count(translate.iter().map(|case| &case.3));
            (a + c, b + d)
        }),
        ("lbctl", lbctl::counts()),
        ("unreadable-files", files::counts()),
        ("gossip-key-file", key_files::counts()),
        ("host-checks", host::counts()),
        ("number-bounds", bounds::counts()),
        ("kubernetes-check", cluster::counts()),
    ];
    let mut total = (0, 0);
    for (category, (rejected, accepted)) in categories {
        println!("{}", summary(category, rejected, accepted));
        assert!(rejected > 0 && accepted > 0, "{category}");
        total = (total.0 + rejected, total.1 + accepted);
    }
    println!("{}", summary("total", total.0, total.1));
    assert!(total.0 >= 60, "only {} bad inputs", total.0);
}
