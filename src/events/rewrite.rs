//! What a backfill reads from and keeps of the parts of its range, and the split of parts
//! that hold the events of several input files (written by earlier versions' backfills).

use super::*;

/// Which orgs' events [`lines_of_file`] reads.
#[derive(Debug, Clone, Copy)]
pub enum OrgFilter<'a> {
    Any,
    /// Only these orgs (every org when empty).
    In(&'a [String]),
    /// Every org but these.
    NotIn(&'a [String]),
}

/// The line numbers of the events of input file `file_sha` in `parts` (relative to
/// `state_dir`) whose org passes `orgs`.
pub fn lines_of_file(
    state_dir: &Path,
    parts: &[String],
    file_sha: &str,
    orgs: OrgFilter<'_>,
) -> anyhow::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    if parts.is_empty() {
        return Ok(out);
    }
    let mut lf = scan_parts(state_dir, parts)?.filter(col("file").eq(lit(file_sha)));
    match orgs {
        OrgFilter::Any => {}
        OrgFilter::In([]) => {}
        OrgFilter::In(o) => lf = lf.filter(org_in(o)),
        OrgFilter::NotIn(o) => lf = lf.filter(org_in(o).not()),
    }
    let df = lf.select([col("line")]).collect()?;
    let lines = df.column("line")?.i64()?;
    out.extend(lines.iter().flatten().map(|l| l as u64));
    Ok(out)
}

/// The input files whose events `part` (relative to `state_dir`) holds, with how many each.
pub fn sources_of(state_dir: &Path, part: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let df = scan_parts(state_dir, &[part.to_string()])?
        .group_by([col("file")])
        .agg([len().cast(DataType::Int64).alias("rows")])
        .sort(["file"], SortMultipleOptions::default())
        .collect()?;
    let files = df.column("file")?.str()?;
    let rows = df.column("rows")?.i64()?;
    Ok(files
        .iter()
        .zip(rows.iter())
        .filter_map(|(f, n)| Some((f?.to_string(), n? as u64)))
        .collect())
}

/// Writes the events of `part` that came from input file `file_sha` to `rel` (through a
/// temporary file); returns how many rows it holds.
pub fn write_source(
    state_dir: &Path,
    part: &str,
    file_sha: &str,
    rel: &str,
) -> anyhow::Result<u64> {
    let mut df = scan_parts(state_dir, &[part.to_string()])?
        .filter(col("file").eq(lit(file_sha)))
        .collect()?;
    write_frame(&mut df, &state_dir.join(rel))?;
    Ok(df.height() as u64)
}

/// Writes the events of `parts` (relative to `src`) whose org is not one of `drop_orgs` to
/// `rel` (relative to `dst`, through a temporary file); returns how many rows it holds, and
/// writes nothing when there are none.
pub fn write_kept(
    src: &Path,
    parts: &[String],
    drop_orgs: &[String],
    dst: &Path,
    rel: &str,
) -> anyhow::Result<u64> {
    if parts.is_empty() {
        return Ok(0);
    }
    let mut df = scan_parts(src, parts)?
        .filter(org_in(drop_orgs).not())
        .collect()?;
    if df.height() == 0 {
        return Ok(0);
    }
    write_frame(&mut df, &dst.join(rel))?;
    Ok(df.height() as u64)
}

/// Writes a frame of events as one Parquet file, whole: a temporary file, synced, renamed,
/// and the rename synced (the store lists the part next).
fn write_frame(df: &mut DataFrame, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("parquet.tmp");
    let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut f = BufWriter::with_capacity(WRITE_BUFFER, f);
    ParquetWriter::new(&mut f)
        .with_compression(ParquetCompression::Lz4Raw)
        .finish(df)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    Ok(())
}
