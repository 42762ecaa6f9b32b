//! The user commands: `mb`, `rb`, `put`, `get`, `cp`, `ls`, `rm`, `stat`.
//! Paths name objects as `cairn://bucket/key`; `-` is stdin or stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_metadata::types::{
    EcParams, ListRequest, ObjectManifest, StripeManifest, STRIPE_PAGE_MAX,
};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::config::ConnArgs;

use super::url::is_remote;
pub use super::url::{CairnUrl, LsTarget};

/// Output options shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct OutArgs {
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// `cairn mb`.
#[derive(clap::Args, Debug)]
pub struct MbArgs {
    /// `cairn://bucket`
    pub url: CairnUrl,
    /// Erasure coding K+M.
    #[arg(long, default_value = "4+2")]
    pub ec: EcParams,
    /// Shard size in bytes (a stripe holds K of them).
    #[arg(long, default_value_t = 1 << 20)]
    pub shard_size: u32,
}

/// `cairn put` / `cairn get` / `cairn cp`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Source: a file, a directory (with -r), `-`, or `cairn://bucket/key`.
    pub src: String,
    /// Destination: the same forms.
    pub dst: String,
    /// Copy a directory tree / every key under a prefix.
    #[arg(long, short)]
    pub recursive: bool,
    /// Content-Type to store.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Files larger than this (MiB) are uploaded in parts (multipart), as
    /// must be anything over 5 GiB. Standard input is one PUT (at most 5
    /// GiB) unless `--part-size-mib` is given.
    #[arg(long, default_value_t = 5120, value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub multipart_threshold_mib: u64,
    /// Part size for uploads in parts, MiB (5 to 5120; for files the
    /// default is the larger of 512 MiB and size / 10,000). Given with
    /// standard input (`-`), it is uploaded in parts of this size.
    #[arg(long, value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size_mib: Option<u64>,
}

/// S3's most parts per upload.
const MAX_PARTS: u32 = 10_000;

/// Counts bytes read through it into a progress bar.
struct Counted<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.pb.inc(n as u64);
        r
    }
}

/// Uploads `reader` to `dst` as a multipart upload of `part`-byte parts
/// (aborted on failure, so no part is left behind).
async fn put_in_parts<R: tokio::io::AsyncRead + Unpin + Send>(
    c: &Client,
    dst: &CairnUrl,
    reader: R,
    part: u64,
    opts: &PutOptions,
    pb: &ProgressBar,
) -> anyhow::Result<ObjectManifest> {
    use cairn_metadata::types::{CompletePart, PutCondition};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let up = c
        .create_upload(&dst.bucket, &dst.key, opts, None, None, "")
        .await?;
    let result = async {
        let mut reader = tokio::io::BufReader::new(reader);
        let mut parts = Vec::new();
        let mut number = 0u32;
        while !reader.fill_buf().await?.is_empty() {
            number += 1;
            if number > MAX_PARTS {
                bail!("more than {MAX_PARTS} parts of {part} bytes: use a larger --part-size-mib");
            }
            let body = Counted {
                inner: (&mut reader).take(part),
                pb: pb.clone(),
            };
            let info = c
                .upload_part(
                    &dst.bucket,
                    &dst.key,
                    up.id,
                    number,
                    body,
                    Default::default(),
                )
                .await?;
            parts.push(CompletePart {
                number,
                etag: info.etag,
            });
        }
        let m = c
            .complete_upload(
                &dst.bucket,
                &dst.key,
                up.id,
                parts,
                Default::default(),
                PutCondition::None,
            )
            .await?;
        anyhow::Ok(m)
    }
    .await;
    if result.is_err() {
        if let Err(e) = c.abort_upload(&dst.bucket, &dst.key, up.id).await {
            tracing::warn!(error = %e, "could not abort the failed upload");
        }
    }
    result
}

/// `cairn ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// `cairn://bucket[/prefix]`; without it (or with a bare `cairn://`),
    /// lists buckets.
    pub url: Option<LsTarget>,
    /// List every key under the prefix instead of one level.
    #[arg(long, short)]
    pub recursive: bool,
}

/// `cairn rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// `cairn://bucket/key`
    pub url: CairnUrl,
    /// Remove every key under the prefix.
    #[arg(long, short)]
    pub recursive: bool,
}

/// `cairn stat` / `cairn rb`.
#[derive(clap::Args, Debug)]
pub struct UrlArgs {
    /// `cairn://bucket[/key]`
    pub url: CairnUrl,
}

/// Builds a client from flags, environment and config file.
pub async fn client(conn: &ConnArgs) -> anyhow::Result<Client> {
    let (metadata, secret) = conn.resolve()?;
    let mut cfg = ClientConfig::new(metadata, secret);
    if let Some(s) = conn.intent_lease_secs {
        cfg.intent_lease = std::time::Duration::from_secs(s.max(1));
    }
    Ok(Client::connect(cfg).await?)
}

fn bar(len: Option<u64>, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(l) => ProgressBar::new(l),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// `cairn mb`.
pub async fn mb(conn: &ConnArgs, a: MbArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    c.create_bucket(&a.url.bucket, a.ec, a.shard_size).await?;
    outln!("make_bucket: {} ({})", a.url.bucket, a.ec);
    Ok(())
}

/// `cairn rb`.
pub async fn rb(conn: &ConnArgs, a: UrlArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    c.delete_bucket(&a.url.bucket).await?;
    outln!("remove_bucket: {}", a.url.bucket);
    Ok(())
}

async fn upload(
    c: &Client,
    src: &str,
    dst: &CairnUrl,
    a: &CopyArgs,
    out: &OutArgs,
) -> anyhow::Result<ObjectManifest> {
    let opts = PutOptions {
        content_type: a.content_type.clone(),
        md5: true,
        ..Default::default()
    };
    if src == "-" {
        let pb = bar(None, out.quiet, &dst.key);
        // Streamed as it arrives: one PUT (at most 5 GiB), or in parts
        // when asked for.
        let m = match a.part_size_mib {
            Some(p) => put_in_parts(c, dst, tokio::io::stdin(), p << 20, &opts, &pb).await?,
            None => {
                let p = pb.clone();
                c.put_with_progress(
                    &dst.bucket,
                    &dst.key,
                    tokio::io::stdin(),
                    opts,
                    Some(Arc::new(move |n| p.inc(n))),
                )
                .await?
            }
        };
        pb.finish_and_clear();
        return Ok(m);
    }
    let f = tokio::fs::File::open(src)
        .await
        .with_context(|| format!("cannot open {src}"))?;
    let len = f.metadata().await.map(|m| m.len()).ok();
    let pb = bar(len, out.quiet, &dst.key);
    if let Some(len) = len.filter(|l| *l > a.multipart_threshold_mib << 20) {
        let part = match a.part_size_mib {
            Some(p) => p << 20,
            None => (512u64 << 20).max(len.div_ceil(u64::from(MAX_PARTS))),
        };
        let m = put_in_parts(c, dst, f, part, &opts, &pb).await?;
        pb.finish_and_clear();
        return Ok(m);
    }
    let p = pb.clone();
    let m = c
        .put_with_progress(
            &dst.bucket,
            &dst.key,
            f,
            opts,
            Some(Arc::new(move |n| p.inc(n))),
        )
        .await?;
    pb.finish_and_clear();
    Ok(m)
}

async fn download(c: &Client, src: &CairnUrl, dst: &str, out: &OutArgs) -> anyhow::Result<u64> {
    let (m, mut stream) = c.get(&src.bucket, &src.key, None).await?;
    let pb = bar(Some(m.size), out.quiet || dst == "-", &src.key);
    let mut total = 0u64;
    if dst == "-" {
        let mut w = tokio::io::stdout();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            w.write_all(&chunk).await?;
            total += chunk.len() as u64;
        }
        w.flush().await?;
        return Ok(total);
    }
    let path = PathBuf::from(dst);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    // Write to a temp file and rename, so a failed download never leaves a
    // truncated file under the destination name.
    let tmp = path.with_file_name(format!(
        ".{}.cairn-partial",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download")
    ));
    let res: anyhow::Result<()> = async {
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            f.write_all(&chunk).await?;
            total += chunk.len() as u64;
            pb.inc(chunk.len() as u64);
        }
        f.sync_all().await?;
        Ok(())
    }
    .await;
    pb.finish_and_clear();
    if let Err(e) = res {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, &path).await?;
    Ok(total)
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every key under `prefix`.
pub async fn all_keys(
    c: &Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<cairn_metadata::types::ListEntry>> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list(ListRequest {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                delimiter: None,
                start_after: None,
                continuation: token.clone(),
                max_keys: 1000,
            })
            .await?;
        out.extend(page.entries);
        if !page.truncated {
            break;
        }
        token = page.next_continuation;
    }
    Ok(out)
}

/// `cairn put`, `cairn get` and `cairn cp`.
pub async fn cp(conn: &ConnArgs, a: CopyArgs, out: &OutArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    match (is_remote(&a.src), is_remote(&a.dst)) {
        (false, true) => {
            let dst: CairnUrl = a.dst.parse()?;
            if a.recursive {
                let root = PathBuf::from(&a.src);
                let mut prefix = dst.key.clone();
                if !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.push('/');
                }
                for f in walk(&root)? {
                    let rel = f.strip_prefix(&root)?;
                    let rel = rel
                        .to_str()
                        .with_context(|| format!("{} is not UTF-8", rel.display()))?;
                    let key = format!("{prefix}{}", rel.replace(std::path::MAIN_SEPARATOR, "/"));
                    let d = CairnUrl {
                        bucket: dst.bucket.clone(),
                        key,
                    };
                    let src = f.to_string_lossy().to_string();
                    let m = upload(&c, &src, &d, &a, out).await?;
                    outln!(
                        "upload: {} to cairn://{}/{} ({} bytes)",
                        src,
                        d.bucket,
                        d.key,
                        m.size
                    );
                }
                return Ok(());
            }
            let mut d = dst.clone();
            if d.key.is_empty() || d.key.ends_with('/') {
                let name = Path::new(&a.src)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("destination key needed when reading stdin")?;
                d.key.push_str(name);
            }
            let m = upload(&c, &a.src, &d, &a, out).await?;
            outln!(
                "upload: {} to cairn://{}/{} ({} bytes)",
                a.src,
                d.bucket,
                d.key,
                m.size
            );
            Ok(())
        }
        (true, false) => {
            let src: CairnUrl = a.src.parse()?;
            if a.recursive {
                let root = PathBuf::from(&a.dst);
                let keys = all_keys(&c, &src.bucket, &src.key).await?;
                for e in keys {
                    let rel = e.key[src.key.len()..].trim_start_matches('/');
                    if rel.split('/').any(|p| p == ".." || p == ".") || rel.is_empty() {
                        eprintln!("skip: key {:?} does not map to a safe local path", e.key);
                        continue;
                    }
                    let path = root.join(rel);
                    let s = CairnUrl {
                        bucket: src.bucket.clone(),
                        key: e.key.clone(),
                    };
                    let n = download(&c, &s, &path.to_string_lossy(), out).await?;
                    outln!(
                        "download: cairn://{}/{} to {} ({n} bytes)",
                        s.bucket,
                        s.key,
                        path.display()
                    );
                }
                return Ok(());
            }
            let mut dst = a.dst.clone();
            if dst != "-" && Path::new(&dst).is_dir() {
                let name = src.key.rsplit('/').next().unwrap_or("download");
                dst = Path::new(&dst).join(name).to_string_lossy().to_string();
            }
            let n = download(&c, &src, &dst, out).await?;
            if dst != "-" {
                outln!(
                    "download: cairn://{}/{} to {dst} ({n} bytes)",
                    src.bucket,
                    src.key
                );
            }
            Ok(())
        }
        (true, true) => bail!("remote-to-remote copy is not supported yet; get then put"),
        (false, false) => bail!("one of source and destination must be a cairn:// URL"),
    }
}

/// `cairn ls`.
pub async fn ls(conn: &ConnArgs, a: LsArgs, out: &OutArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    let Some(url) = a.url.and_then(|t| t.0) else {
        let buckets = c.list_buckets().await?;
        if out.json {
            outln!("{}", serde_json::to_string_pretty(&buckets)?);
        } else {
            for b in buckets {
                outln!("{}  {}  {}", fmt_time(b.created_ms), b.ec, b.name);
            }
        }
        return Ok(());
    };
    let mut entries = Vec::new();
    let mut prefixes = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list(ListRequest {
                bucket: url.bucket.clone(),
                prefix: url.key.clone(),
                delimiter: if a.recursive { None } else { Some("/".into()) },
                start_after: None,
                continuation: token.clone(),
                max_keys: 1000,
            })
            .await?;
        entries.extend(page.entries);
        prefixes.extend(page.common_prefixes);
        if !page.truncated {
            break;
        }
        token = page.next_continuation;
    }
    if out.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "bucket": url.bucket,
                "prefix": url.key,
                "common_prefixes": prefixes,
                "objects": entries,
            }))?
        );
    } else {
        for p in prefixes {
            outln!("{:>19}  {:>12}  {p}", "", "PRE");
        }
        for e in entries {
            outln!("{}  {:>12}  {}", fmt_time(e.created_ms), e.size, e.key);
        }
    }
    Ok(())
}

/// `cairn rm`.
pub async fn rm(conn: &ConnArgs, a: RmArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    if a.recursive {
        for e in all_keys(&c, &a.url.bucket, &a.url.key).await? {
            c.delete(&a.url.bucket, &e.key).await?;
            outln!("delete: cairn://{}/{}", a.url.bucket, e.key);
        }
        return Ok(());
    }
    if a.url.key.is_empty() {
        bail!("rm needs a key (or -r for a prefix)");
    }
    c.delete(&a.url.bucket, &a.url.key).await?;
    outln!("delete: cairn://{}/{}", a.url.bucket, a.url.key);
    Ok(())
}

/// `cairn stat`: an object's manifest, with where every shard is.
pub async fn stat(conn: &ConnArgs, a: UrlArgs, out: &OutArgs) -> anyhow::Result<()> {
    let c = client(conn).await?;
    let m = c.head(&a.url.bucket, &a.url.key).await?;
    let total = cairn_client::read::stripe_count(&m)?;
    if out.json {
        // The manifest with its first page of stripes (all of them for an
        // object of up to STRIPE_PAGE_MAX stripes), the total, and whether
        // the list was cut: a 5 TiB object's million stripe rows are not
        // gathered into one document.
        let mut v = serde_json::to_value(&m)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("stripe_count".into(), total.into());
            o.insert(
                "stripes_truncated".into(),
                ((m.stripes.len() as u64) < total).into(),
            );
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let servers = c.chunkservers().await.unwrap_or_default();
    let addr = |id: Option<u64>| match id {
        None => "(missing)".to_string(),
        Some(id) => servers
            .iter()
            .find(|s| s.id == id)
            .map(|s| format!("cs{id} {} [{}] {:?}", s.addr, s.zone, s.state).to_lowercase())
            .unwrap_or_else(|| format!("cs{id} (unknown)")),
    };
    outln!("cairn://{}/{}", a.url.bucket, a.url.key);
    outln!("  size:     {}", m.size);
    outln!("  etag:     {}", m.etag);
    outln!("  version:  {}", m.version);
    outln!("  created:  {}", fmt_time(m.created_ms));
    outln!("  coding:   {} shards of {} bytes", m.ec, m.shard_size);
    if let Some(ct) = &m.content_type {
        outln!("  type:     {ct}");
    }
    outln!("  stripes:  {total}");
    // Page through the stripe rows: one page in memory at a time.
    let mut page = m.stripes.clone();
    let mut from = 0u64;
    loop {
        print_stripes(&page, from, m.ec.k, &addr);
        from += page.len() as u64;
        if from >= total || page.is_empty() {
            break;
        }
        page = c
            .stripes(&a.url.bucket, &a.url.key, m.version, from, STRIPE_PAGE_MAX)
            .await?;
    }
    Ok(())
}

fn print_stripes(
    stripes: &[StripeManifest],
    from: u64,
    k: u8,
    addr: &dyn Fn(Option<u64>) -> String,
) {
    for (i, s) in stripes.iter().enumerate() {
        let i = from + i as u64;
        outln!("  stripe {i} ({} bytes) {}", s.len, s.id);
        for (j, l) in s.shards.iter().enumerate() {
            let kind = if j < usize::from(k) { "data" } else { "parity" };
            outln!(
                "    [{j}] {kind:<6} {}  {}  blake3 {}",
                l.shard,
                addr(l.chunkserver),
                &l.blake3.to_string()[..16]
            );
        }
    }
}

/// `2026-11-27 03:20:28` in UTC from ms since the epoch.
pub fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(1_795_749_628_000), "2026-11-27 03:20:28");
    }
}
