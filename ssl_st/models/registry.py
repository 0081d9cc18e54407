"""Pretraining methods: one frozen dataclass per method holds its settings *and* its training plan,
and is registered once, under the name a config or the CLI uses, in :data:`PRETRAINING`.

A method class declares ``name``, the ``network`` it trains (``masked-autoencoder`` or
``barlow-twins``: what :meth:`~ssl_st.models.Architecture.build` makes and what a checkpoint's layout
is) and whether it ``needs_programs``; its dataclass fields are its settings. It implements
:meth:`Pretraining.loss` and :meth:`Pretraining.optimizer` (or inherits AdamW from
:class:`AdamWConfig`); :meth:`Pretraining.train` runs the loop every method shares. Method modules
import torch inside their functions, so that listing methods or reading their settings stays cheap.

Adding an objective
-------------------
One new file with one decorated class, and its module added to ``builtin`` below. For a denoising
autoencoder, ``ssl_st/models/denoise.py``::

    from __future__ import annotations

    from dataclasses import asdict, dataclass
    from typing import ClassVar

    from .architecture import Network
    from .registry import PRETRAINING, AdamWConfig


    @PRETRAINING.register
    @dataclass(frozen=True)
    class DenoiseConfig(AdamWConfig):  # Gaussian noise in, clean expression out
        name: ClassVar[str] = "denoise"
        network: ClassVar[Network] = "masked-autoencoder"
        noise: float = 0.5

        def loss(self, vocabulary, programs):
            import torch

            def loss_fn(network, x, gen):
                noisy = x + self.noise * torch.randn(x.shape, generator=gen, device=x.device)
                return ((network(noisy)[1] - x) ** 2).mean()

            return loss_fn, {}  # no facts to add to the training record

and ``"ssl_st.models.denoise"`` appended to ``builtin``. Then ``"denoise" in PRETRAINING`` and
``ssl_st.models.pretrain("denoise", inputs, vocabulary, architecture, {"noise": 0.3})`` trains it;
its checkpoints load anywhere, registered or not (the network is read off the file's layout).
A class defined outside this package registers itself the same way when its module is imported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..registry import Registry

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch
    from torch.optim.lr_scheduler import LRScheduler

    from ..genes import Vocabulary
    from .architecture import Architecture, Network
    from .base import SSLModel
    from .training import EpochCallback, LossFn

Programs = Mapping[str, Sequence[str]]

PRETRAINING: Registry[type[Pretraining]] = Registry(
    "pretraining method",
    builtin=("ssl_st.models.random_mask", "ssl_st.models.gp_mask", "ssl_st.models.barlow_twins"),
)


@dataclass(frozen=True)
class Pretraining(ABC):
    """A pretraining method: its declaration, the loop settings every method has, and its plan."""

    name: ClassVar[str]
    network: ClassVar[Network]
    needs_programs: ClassVar[bool] = False
    drop_last: ClassVar[bool] = False  # objectives with batch statistics (Barlow Twins) need full batches

    epochs: int = 30
    batch_size: int = 256
    validation_fraction: float = 0.1

    @property
    def gradient_clip(self) -> float | None:
        """The gradient norm each step is clipped to (None: no clipping). A method with a setting for
        it declares a field of this name."""
        return None

    @abstractmethod
    def loss(self, vocabulary: Vocabulary, programs: Programs | None) -> tuple[LossFn, dict[str, Any]]:
        """The loss the loop minimises, and facts about it for the model's training record."""

    @abstractmethod
    def optimizer(
        self, network: torch.nn.Module, steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, LRScheduler | None]:
        """The optimizer, and a learning-rate scheduler stepped after every optimizer step (or None)."""

    def train(
        self,
        inputs: sp.csr_matrix,
        vocabulary: Vocabulary,
        architecture: Architecture,
        *,
        programs: Programs | None = None,
        seed: int = 0,
        device: str = "auto",
        log_dir: str | Path | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> SSLModel:
        """Pretrain on normalised inputs in vocabulary order (see :func:`ssl_st.pp.model_input`);
        ``programs`` maps names to gene symbols (e.g. from :func:`ssl_st.programs.read_gmt`).
        ``on_epoch(epoch, total, train_loss, val_loss)`` follows every epoch, ``total`` being
        ``self.epochs`` (:data:`ssl_st.models.training.EpochCallback`).

        The run every method shares: the method's loss, a seeded init of its network, the loop of
        :func:`ssl_st.models.training.fit`, and a model whose ``training`` record holds the settings,
        the loss's facts, the seed and the history (best validation epoch's weights restored).
        """
        if self.needs_programs and not programs:
            raise ValueError(f"{self.name} pretraining needs gene programs (a GMT file)")
        import torch

        from .base import SSLModel, resolve_device
        from .training import fit

        loss_fn, facts = self.loss(vocabulary, programs)
        torch.manual_seed(seed)  # the network's initial weights
        network = architecture.build(len(vocabulary), self.network)
        history = fit(
            network, loss_fn, inputs, self, seed=seed, device=resolve_device(device), on_epoch=on_epoch, log_dir=log_dir
        )
        network.cpu()
        training = {**asdict(self), **facts, "seed": seed, **history}
        return SSLModel(network, vocabulary, architecture, self.name, training)


@dataclass(frozen=True)
class AdamWConfig(Pretraining):
    """AdamW at a constant learning rate with gradient clipping: the masked autoencoders' optimiser
    (upstream: lr 1e-3, weight decay 0.01, clip 1)."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    gradient_clip: float = 1.0

    def optimizer(self, network: torch.nn.Module, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, None]:
        import torch

        return torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay), None
