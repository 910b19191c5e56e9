"""Image data: folders in Chollet's layout (`folders`) and what makes a file bad (`checks`), the training
subsample and split identities (`splits`), decoding (`images`), and where a folder comes from (`sources`)."""

from harness.data.checks import image_problem, shown
from harness.data.folders import IMAGE_SUFFIXES, REQUIRED_SPLITS, SPLITS, ImageFolder, Split, scan_folder
from harness.data.images import load_images
from harness.data.manifest import scan_manifest
from harness.data.sources import (
    download_archive,
    downloads,
    ensure_synthetic,
    keras_cache,
    resolve_data_path,
    zip_problem,
)
from harness.data.splits import check_fraction, split_identity, subsample

__all__ = [
    "IMAGE_SUFFIXES",
    "REQUIRED_SPLITS",
    "SPLITS",
    "ImageFolder",
    "Split",
    "check_fraction",
    "download_archive",
    "downloads",
    "ensure_synthetic",
    "image_problem",
    "keras_cache",
    "load_images",
    "resolve_data_path",
    "scan_manifest",
    "scan_folder",
    "shown",
    "split_identity",
    "subsample",
    "zip_problem",
]
