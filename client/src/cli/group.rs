//! `tidelog group list|describe|reset-offsets|delete|wait`.

use anyhow::Context;
use clap::{ArgGroup, Args};
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use tidelog_client::{Client, Offset, PartitionId, Seek};

use super::ExitWith;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_timestamp"])))]
pub struct ResetOffsetsArgs {
    /// Group id.
    group: String,
    /// Topic whose partitions are reset (every partition).
    #[arg(long, value_name = "T")]
    topic: String,
    /// To the oldest record still kept.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of the log (skip everything not yet consumed).
    #[arg(long)]
    to_latest: bool,
    /// To this offset, clamped into each partition's log.
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// To the first record at or after this time (ms since the Unix epoch); the end if none.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

fn right_align(table: &mut Table, columns: &[usize]) {
    for index in columns {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

pub async fn list(client: &Client) -> anyhow::Result<()> {
    let groups = client.admin().list_groups().await.context("cannot list groups")?;
    let mut out = table(&["Group", "State", "Members"]);
    for group in &groups {
        out.add_row(vec![
            group.group_id().to_owned(),
            group.state().to_string(),
            group.members().to_string(),
        ]);
    }
    right_align(&mut out, &[2]);
    println!("{out}");
    Ok(())
}

pub async fn describe(client: &Client, group: &str) -> anyhow::Result<()> {
    let description = client
        .admin()
        .describe_group(group)
        .await
        .with_context(|| format!("cannot describe group {group}"))?;
    let protocol = match (description.protocol(), description.protocol_name()) {
        (Some(protocol), Some(name)) => format!("  Protocol: {protocol} ({name})"),
        (Some(protocol), None) => format!("  Protocol: {protocol}"),
        _ => String::new(),
    };
    println!(
        "Group: {}  State: {}  Members: {}  Epoch: {}{protocol}",
        description.group_id(),
        description.state(),
        description.members().len(),
        description.group_epoch()
    );
    let mut out = table(&[
        "Topic",
        "Partition",
        "Committed offset",
        "Log end offset",
        "Lag",
        "Member",
    ]);
    let dash = || "-".to_owned();
    for offset in description.offsets() {
        out.add_row(vec![
            offset.topic().to_string(),
            offset.partition().to_string(),
            offset.committed().map_or_else(dash, |o| o.to_string()),
            offset.log_end_offset().to_string(),
            offset.lag().map_or_else(dash, |l| l.to_string()),
            offset.member_id().map_or_else(dash, str::to_owned),
        ]);
    }
    right_align(&mut out, &[1, 2, 3, 4]);
    println!("{out}");
    Ok(())
}

pub async fn reset_offsets(client: &Client, args: ResetOffsetsArgs) -> anyhow::Result<()> {
    // The ArgGroup makes exactly one target present.
    let to = match (
        args.to_earliest,
        args.to_latest,
        args.to_offset,
        args.to_timestamp,
    ) {
        (true, _, _, _) => Seek::Earliest,
        (_, true, _, _) => Seek::Latest,
        (_, _, Some(offset), _) => Seek::Offset(Offset::new(offset)),
        (_, _, _, Some(ms)) => Seek::Timestamp(ms),
        _ => anyhow::bail!("give one of --to-earliest, --to-latest, --to-offset, --to-timestamp"),
    };
    let offsets = client
        .admin()
        .reset_offsets(&args.group, &args.topic, to)
        .await
        .with_context(|| {
            format!(
                "cannot reset the offsets of group {} on {}",
                args.group, args.topic
            )
        })?;
    let mut out = table(&["Topic", "Partition", "New offset"]);
    for (partition, offset) in &offsets {
        out.add_row(vec![
            args.topic.clone(),
            partition.to_string(),
            offset.to_string(),
        ]);
    }
    right_align(&mut out, &[1, 2]);
    println!("{out}");
    Ok(())
}

pub async fn delete(client: &Client, group: &str) -> anyhow::Result<()> {
    client
        .admin()
        .delete_group(group)
        .await
        .with_context(|| format!("cannot delete group {group}"))?;
    println!("Deleted group {group}.");
    Ok(())
}

/// `group wait`'s exit status when the timeout passes before the commit.
pub const WAIT_TIMED_OUT_EXIT: u8 = 4;

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Group id.
    group: String,
    /// Topic of the partition.
    topic: String,
    /// Partition number.
    partition: u32,
    /// Wait until the group's committed offset is at or past this.
    offset: i64,
    /// Give up after this long (the broker caps it at its groups.offset_wait_ms_max); then one
    /// line on stderr and exit status 4.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,
}

/// Exits 0 once the group has committed at or past the offset; on timeout one line on stderr
/// and exit status [`WAIT_TIMED_OUT_EXIT`].
pub async fn wait(client: &Client, args: WaitArgs) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let waited = client
        .wait_for_group_offset(
            &args.group,
            &args.topic,
            PartitionId::new(args.partition),
            Offset::new(args.offset),
            timeout,
        )
        .await
        .with_context(|| {
            format!(
                "cannot wait for group {} on {}/{}",
                args.group, args.topic, args.partition
            )
        })?;
    if waited.reached {
        return Ok(());
    }
    let committed = if waited.committed < 0 {
        "nothing".to_owned()
    } else {
        waited.committed.to_string()
    };
    Err(ExitWith {
        code: WAIT_TIMED_OUT_EXIT,
        line: format!(
            "timeout: group {} committed {committed} on {}/{} after {} ms, waited for {}",
            args.group, args.topic, args.partition, args.timeout_ms, args.offset
        ),
    }
    .into())
}
