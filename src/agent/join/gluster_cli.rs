//! The Gluster CLI in XML mode (`gluster --mode=script --xml`): running it on the local
//! glusterd and reading its answers (the pool's peers, a volume's state, bricks and
//! options). The CLI exits 0 whether the operation worked or not; `opRet` says which.

use anyhow::{Context as _, bail};

use super::gluster::{Peer, Volume};
use crate::agent::host::{Host, Invocation};

/// Runs `gluster --mode=script --xml` with `args` on the local glusterd and returns
/// its XML answer once it says the operation succeeded.
pub(crate) fn gluster(host: &mut dyn Host, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["--mode=script", "--xml"];
    all.extend_from_slice(args);
    let output = host.run(&Invocation::new("gluster", all).with_timeout(120))?;
    let answer = cli_answer(&output)?;
    if answer.op_ret != 0 {
        bail!("gluster {}: {}", args.join(" "), answer.op_errstr);
    }
    Ok(output)
}

/// `volume info` of `volume` (or of the only volume, when `None`); `None` when it does
/// not exist here.
pub(crate) fn volume_info(
    host: &mut dyn Host,
    volume: Option<&str>,
) -> anyhow::Result<Option<Volume>> {
    let mut args = vec!["--mode=script", "--xml", "volume", "info"];
    args.extend(volume);
    let output = host.run(&Invocation::new("gluster", args).with_timeout(120))?;
    parse_volume(&output)
}

/// The status part of every answer of the CLI in XML mode (it exits 0 either way).
struct CliAnswer {
    op_ret: i64,
    op_errstr: String,
}

fn cli_answer(xml: &str) -> anyhow::Result<CliAnswer> {
    let document = roxmltree::Document::parse(xml).context("reading gluster's XML answer")?;
    let root = document.root_element();
    let text = |name: &str| child_text(root, name).unwrap_or_default();
    Ok(CliAnswer {
        op_ret: text("opRet").trim().parse().unwrap_or(-1),
        op_errstr: text("opErrstr"),
    })
}

fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.children()
        .find(|child| child.has_tag_name(name))
        .map(|child| child.text().unwrap_or_default().to_string())
}

/// The peers of `gluster pool list`, without this node (`localhost`).
pub fn parse_pool(xml: &str) -> anyhow::Result<Vec<Peer>> {
    let document = roxmltree::Document::parse(xml).context("reading gluster's pool list")?;
    Ok(document
        .descendants()
        .filter(|node| node.has_tag_name("peer"))
        .filter_map(|peer| {
            let hostname = child_text(peer, "hostname")?;
            (hostname != "localhost").then(|| Peer {
                connected: child_text(peer, "connected").as_deref() == Some("1"),
                hostname,
            })
        })
        .collect())
}

/// The volume of `gluster volume info [NAME]`, `None` when the answer says it does not
/// exist (or, asked for every volume, that there is none).
pub fn parse_volume(xml: &str) -> anyhow::Result<Option<Volume>> {
    let answer = cli_answer(xml)?;
    let document = roxmltree::Document::parse(xml).context("reading gluster's volume info")?;
    let Some(volume) = document
        .descendants()
        .find(|node| node.has_tag_name("volume"))
    else {
        // Asked by name: "does not exist"; asked for all: an empty list.
        if answer.op_ret == 0 || answer.op_errstr.contains("does not exist") {
            return Ok(None);
        }
        bail!("gluster volume info: {}", answer.op_errstr);
    };
    let bricks = volume
        .descendants()
        .filter(|node| node.has_tag_name("brick"))
        .filter_map(|brick| child_text(brick, "name"))
        .collect();
    let options = volume
        .descendants()
        .filter(|node| node.has_tag_name("option"))
        .filter_map(|option| Some((child_text(option, "name")?, child_text(option, "value")?)))
        .collect();
    Ok(Some(Volume {
        name: child_text(volume, "name").unwrap_or_default(),
        started: child_text(volume, "statusStr").as_deref() == Some("Started"),
        bricks,
        options,
    }))
}
