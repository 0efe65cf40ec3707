"""MMRec-format datasets as PyG :class:`InMemoryDataset` classes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import os.path as osp
import shutil
import warnings
from collections.abc import Callable, Mapping

from torch_geometric.data import HeteroData, InMemoryDataset

from mde_pyg.data.mmrec import DEFAULT_MODALITIES, read_mmrec
from mde_pyg.files import atomic_path

#: Google Drive folder of MMRec's processed Amazon datasets (baby.zip, ...).
MMREC_DRIVE_FOLDER = "13cBy1EA_saTUuXxVllKgtfci2A09jyaG"


class MMRecDataset(InMemoryDataset):
    r"""Any dataset in MMRec's layout: ``<name>.inter`` plus ``.npy`` files.

    The raw files live in ``root/raw`` (or are downloaded there from
    ``url``); :meth:`process` reads them with
    :func:`mde_pyg.data.read_mmrec`, applies ``pre_transform`` (e.g.
    :class:`mde_pyg.transforms.MultiModalGraphs`) and saves one
    :class:`HeteroData` to ``root/processed``. The processed file name
    encodes the modality mapping, so several mappings can share a root.

    Args:
        root (str): Root directory.
        name (str): The dataset name, i.e. the ``<name>.inter`` stem.
        modalities (Mapping[str, str], optional): Modality -> feature file.
            (default: ``{"image": "image_feat.npy", "text":
            "text_feat.npy"}``)
        url (str, optional): A URL of a ``.zip`` archive holding the raw
            files (flat or inside one folder). :obj:`None` means the files
            must be placed in ``raw_dir`` by hand. (default: :obj:`None`)
        transform (callable, optional): Applied on every access.
        pre_transform (callable, optional): Applied once before saving.
        force_reload (bool, optional): Re-process even if processed files
            exist. (default: :obj:`False`)
    """

    def __init__(
        self,
        root: str,
        name: str,
        modalities: Mapping[str, str] | None = None,
        url: str | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
    ) -> None:
        self.name = name
        if modalities is not None and not isinstance(modalities, Mapping):
            raise TypeError(
                f"'modalities' maps modality names to feature files, e.g. "
                f"{DEFAULT_MODALITIES}, got {type(modalities).__name__} "
                f"{modalities!r} (the Amazon classes take no 'name': "
                f"AmazonBaby(root))")
        self.modalities: dict[str, str] = dict(
            DEFAULT_MODALITIES if modalities is None else modalities)
        self.url = url
        # folders PyG creates before a download or processing; removed
        # again, if still empty, when either fails
        processed = osp.join(osp.abspath(root), "processed")
        fresh = [] if osp.isdir(processed) else [processed]
        folder = osp.join(osp.abspath(root), "raw")
        while not osp.isdir(folder) and folder != osp.dirname(folder):
            fresh.append(folder)  # innermost first
            folder = osp.dirname(folder)
        try:
            super().__init__(root, transform, pre_transform,
                             force_reload=force_reload)
        except Exception:
            for folder in fresh:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only ever removes an empty folder
            raise
        self._load_processed()

    def _load_processed(self) -> None:
        """Load the processed file; rebuild it, with a warning, from the raw
        files when it cannot be read (e.g. cut short by a run killed while
        an older version wrote it in place).
        """
        path = self.processed_paths[0]
        try:
            self.load(path, data_cls=HeteroData)
            return
        except (MemoryError, PermissionError):
            raise
        except Exception as error:
            if getattr(self, "_processed_now", False):  # rebuilding won't help
                raise _unreadable(path, error) from error
            warnings.warn(
                f"The processed file '{path}' cannot be read "
                f"({type(error).__name__}: {error}); rebuilding it from the "
                f"raw files in '{self.raw_dir}'", stacklevel=3)
        with contextlib.suppress(FileNotFoundError):  # another rebuilt it
            os.remove(path)
        self._download()
        self._process()
        try:
            self.load(path, data_cls=HeteroData)
        except (MemoryError, PermissionError):
            raise
        except Exception as error:
            raise _unreadable(path, error) from error

    def _process(self) -> None:
        # PyG reads its records of the pre-transform and pre-filter before
        # deciding whether to process; one cut short by a killed run is
        # only a record (written again on the next processing), so it is
        # dropped instead of failing every later run.
        import torch

        for name in ("pre_transform.pt", "pre_filter.pt"):
            path = osp.join(self.processed_dir, name)
            if not osp.isfile(path):
                continue
            try:
                torch.load(path, weights_only=False)
            except (MemoryError, PermissionError):
                raise
            except Exception as error:
                warnings.warn(f"Removing the unreadable '{path}' ({error})",
                              stacklevel=4)
                os.remove(path)
        super()._process()

    @property
    def raw_file_names(self) -> list[str]:
        """The interaction file and the modality files."""
        return [f"{self.name}.inter", *self.modalities.values()]

    @property
    def processed_file_names(self) -> str:
        """One file per modality mapping and pre-transform."""
        key = json.dumps([self.modalities, repr(self.pre_transform)],
                         sort_keys=True)
        return f"data_{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"

    def _missing_message(self) -> str:
        missing = [f for f in self.raw_file_names
                   if not osp.exists(osp.join(self.raw_dir, f))]
        return (f"Place the files {missing} of the '{self.name}' dataset in "
                f"'{self.raw_dir}' (MMRec's format: '{self.name}.inter' "
                f"tab separated with userID, itemID, x_label; one .npy per "
                f"modality, row n = item n)")

    def fetch(self, folder: str) -> None:
        """Download and unpack the raw archive into ``folder``.

        Overridden by the Amazon datasets; the base class downloads
        ``self.url``, raising a :class:`RuntimeError` when none is set and
        the download's own error when it fails (:meth:`download` turns
        any of them into a :class:`RuntimeError` that says which files to
        place by hand).
        """
        from torch_geometric.data import download_url, extract_zip

        if self.url is None:  # download() adds what to place by hand
            raise RuntimeError(f"no download URL is set for '{self.name}'")
        path = download_url(self.url, folder, log=False)
        extract_zip(path, folder, log=False)
        os.unlink(path)

    def download(self) -> None:
        """Fetch the raw files, or explain which files to place by hand."""
        tmp = osp.join(self.root, "download.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            self.fetch(tmp)
        except Exception as error:  # offline, moved file, missing gdown...
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(
                f"Could not download '{self.name}' ({error}). "
                + self._missing_message()) from error
        os.makedirs(self.raw_dir, exist_ok=True)
        for name in self.raw_file_names:
            found = [osp.join(dirpath, name)
                     for dirpath, _, files in os.walk(tmp) if name in files]
            if not found:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError(
                    f"The downloaded archive of '{self.name}' has no "
                    f"'{name}'. " + self._missing_message())
            os.replace(found[0], osp.join(self.raw_dir, name))
        shutil.rmtree(tmp, ignore_errors=True)

    def process(self) -> None:
        """Read the raw files into one :class:`HeteroData` and save it.

        The file is written whole or not at all: saved to a temporary file
        beside it, flushed to disk, then renamed over the processed path,
        so that a run killed meanwhile leaves no truncated cache behind.
        """
        data = read_mmrec(self.raw_dir, f"{self.name}.inter",
                          self.modalities)
        if self.pre_transform is not None:
            data = self.pre_transform(data)
        with atomic_path(self.processed_paths[0]) as tmp:
            self.save([data], tmp)
        self._processed_now = True

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.name})"


def _unreadable(path: str, error: Exception) -> ValueError:
    """The error for a processed file that cannot be read."""
    return ValueError(
        f"The processed file '{path}' cannot be read ({type(error).__name__}"
        f": {error}); delete it to rebuild it from the raw files")


class _AmazonMMRec(MMRecDataset):
    """An Amazon dataset of MMRec, fetched from its Google Drive folder."""

    dataset_name = ""

    def __init__(
        self,
        root: str,
        modalities: Mapping[str, str] | None = None,
        url: str | None = None,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        force_reload: bool = False,
    ) -> None:
        super().__init__(root, self.dataset_name, modalities, url,
                         transform, pre_transform, force_reload)

    def fetch(self, folder: str) -> None:
        """Download ``<name>.zip`` from ``url`` or MMRec's Drive folder.

        The Drive path needs the optional package ``gdown``
        (``pip install mde-pyg[download]``).
        """
        if self.url is not None:
            return super().fetch(folder)
        try:
            import gdown
        except ImportError as error:
            raise RuntimeError(
                "downloading from Google Drive needs 'gdown' "
                "(pip install gdown)") from error
        from torch_geometric.data import extract_zip

        gdown.download_folder(id=MMREC_DRIVE_FOLDER, output=folder,
                              quiet=True)
        archives = [osp.join(d, f) for d, _, files in os.walk(folder)
                    for f in files if f == f"{self.name}.zip"]
        if not archives:
            raise RuntimeError(f"the Drive folder has no '{self.name}.zip'")
        extract_zip(archives[0], folder, log=False)


class AmazonBaby(_AmazonMMRec):
    r"""Amazon Baby as processed by MMRec (19,445 users, 7,050 items,
    160,792 interactions; 4096-d image and 384-d text features).

    Takes the arguments of :class:`MMRecDataset` but its ``name``:
    ``(root, modalities=None, url=None, transform=None,
    pre_transform=None, force_reload=False)``.
    """

    dataset_name = "baby"


class AmazonSports(_AmazonMMRec):
    r"""Amazon Sports as processed by MMRec (35,598 users, 18,357 items,
    296,337 interactions).

    Takes the arguments of :class:`MMRecDataset` but its ``name``:
    ``(root, modalities=None, url=None, transform=None,
    pre_transform=None, force_reload=False)``.
    """

    dataset_name = "sports"


class AmazonClothing(_AmazonMMRec):
    r"""Amazon Clothing as processed by MMRec (39,387 users, 23,033 items,
    278,677 interactions).

    Takes the arguments of :class:`MMRecDataset` but its ``name``:
    ``(root, modalities=None, url=None, transform=None,
    pre_transform=None, force_reload=False)``.
    """

    dataset_name = "clothing"
