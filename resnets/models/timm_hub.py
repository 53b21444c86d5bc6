"""Is a timm network's Hugging Face weights file at hand? Asked before timm's own download.

Without a network, timm's `hf_hub_download` retries each candidate file for about a minute,
printing a warning per retry, before it fails. So when the file is not in the local cache, one
request without retries asks whether the Hub answers; if it does not, the caller stops at once.
"""

from __future__ import annotations

HUB_PROBE_TIMEOUT_S = 5.0


def hub_files(pretrained_cfg) -> tuple[str, str | None, list[str]] | None:
    """(repo id, revision, the file names timm would try) of a timm pretrained config, or None
    when its weights do not come from the Hugging Face Hub."""
    from timm.models import _hub

    if not pretrained_cfg.hf_hub_id or not _hub.has_hf_hub():
        return None
    repo_id, revision = _hub.hf_split(pretrained_cfg.hf_hub_id)
    filename = pretrained_cfg.hf_hub_filename or _hub.HF_WEIGHTS_NAME
    alternatives = (
        [] if filename.endswith(".safetensors") else list(_hub._get_safe_alternatives(filename))
    )
    return repo_id, revision, [*alternatives, filename]


def cached(repo_id: str, revision: str | None, filenames: list[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str)
        for name in filenames
    )


def unreachable_reason(repo_id: str, revision: str | None, filename: str) -> str | None:
    """Why the Hub cannot be asked for `filename` (offline mode, no network), or None when it
    answers (even "no such file": timm's own loading then reports it)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=revision),
            timeout=HUB_PROBE_TIMEOUT_S,
            retry_on_errors=False,
        )
    except LocalEntryNotFoundError as err:
        return f"the Hugging Face Hub cannot be reached: {type(err).__name__}"
    except (HfHubHTTPError, EntryNotFoundError):
        return None  # the server answered
    except Exception as err:  # connection refused, no DNS, timeout, proxy errors
        first = str(err).splitlines()[0] if str(err) else ""
        return f"the Hugging Face Hub cannot be reached: {type(err).__name__}: {first}"
    return None


def missing_and_unreachable(pretrained_cfg) -> str | None:
    """The reason to stop before timm's download, or None to let timm load (or download)."""
    files = hub_files(pretrained_cfg)
    if files is None:
        return None
    repo_id, revision, filenames = files
    if cached(repo_id, revision, filenames):
        return None
    return unreachable_reason(repo_id, revision, filenames[0])
