//! The output of `lbctl migrate metallb`: YAML that `kubectl apply -f` takes as it is,
//! with everything meant for people in comments.

use std::fmt::Write as _;

use lb_agent::ipam::request::{LOAD_BALANCER_CLASS, SPEC_LOAD_BALANCER_IP, annotations};

use super::{ConvertedPool, Migration, ServiceReport, kept_annotations};

/// Comment lines no wider than this (the text wraps at spaces).
const WIDTH: usize = 88;

/// `text` as `#` comment lines indented by `indent` spaces, wrapped at spaces; lines
/// after the first are indented by `hanging` more.
fn comment(out: &mut String, indent: usize, hanging: usize, text: &str) {
    let continued = format!("# {}", " ".repeat(indent + hanging));
    let mut line = format!("# {}", " ".repeat(indent));
    let mut at_start = true;
    for word in text.split_whitespace() {
        if !at_start && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line.clone_from(&continued);
            at_start = true;
        }
        if !at_start {
            line.push(' ');
        }
        line.push_str(word);
        at_start = false;
    }
    out.push_str(&line);
    out.push('\n');
}

fn pool(out: &mut String, converted: &ConvertedPool) -> Result<(), serde_yaml::Error> {
    out.push_str("---\n");
    let announced = if converted.advertisements.is_empty() {
        String::new()
    } else {
        format!(
            "; announced as L2Advertisement {} said",
            converted.advertisements.join(", ")
        )
    };
    comment(
        out,
        0,
        0,
        &format!("From IPAddressPool {}{announced}.", converted.source),
    );
    for warning in &converted.warnings {
        comment(out, 0, 2, &format!("WARNING: {warning}"));
    }
    out.push_str(&serde_yaml::to_string(&converted.pool)?);
    Ok(())
}

fn service(out: &mut String, report: &ServiceReport) {
    let _ = writeln!(out, "#   {}:", report.name);
    if report.kept.is_empty() && report.change.is_empty() {
        comment(
            out,
            4,
            2,
            "nothing to change: it asks for no pool or address, and gets one from a pool \
             that admits it",
        );
    }
    for kept in &report.kept {
        comment(out, 4, 2, &format!("keeps working: {kept}"));
    }
    for change in &report.change {
        comment(out, 4, 2, &format!("CHANGE: {change}"));
    }
}

/// The guide to Services, after the pools.
fn services(out: &mut String, reports: &[ServiceReport]) {
    out.push_str("#\n# Services: these requests keep working unchanged.\n");
    for (theirs, ours) in kept_annotations() {
        let _ = writeln!(out, "#   {theirs:<38} read like {ours}");
    }
    let _ = writeln!(
        out,
        "#   {SPEC_LOAD_BALANCER_IP:<38} read like {}",
        annotations::IPS
    );
    comment(
        out,
        0,
        0,
        &format!(
            "What to change: a Service whose spec.loadBalancerClass names MetalLB's class must \
             be re-created with {LOAD_BALANCER_CLASS} (the field cannot be changed in place). \
             Services without a class are served when xdplb is the cluster's default load \
             balancer (defaultClass: true in its settings). With kube-proxy in IPVS mode, keep \
             strictARP: true, as MetalLB needed."
        ),
    );
    if !reports.is_empty() {
        out.push_str("#\n# The Services in the input:\n");
        for report in reports {
            service(out, report);
        }
    }
}

impl Migration {
    /// The converted pools as multi-document YAML; warnings and the Service report are
    /// comments.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut out = String::new();
        comment(
            &mut out,
            0,
            0,
            "AddressPools converted from MetalLB by `lbctl migrate metallb`. Review the \
             warnings, then `kubectl apply -f` this file.",
        );
        for warning in &self.warnings {
            comment(&mut out, 0, 2, &format!("WARNING: {warning}"));
        }
        for converted in &self.pools {
            pool(&mut out, converted)?;
        }
        services(&mut out, &self.services);
        Ok(out)
    }
}
