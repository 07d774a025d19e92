"""ICMSR: the one-step SR model plus what training with ICM regularization needs."""
import copy
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapperDict

from icmsr.registry import MODELS, build_or_use
from .diffusion import AUX_ROLE, GENERATOR_ROLE
from .one_step_sr import OneStepSR, resize_to


def prepare_training_batch(data: Union[dict, tuple, list], data_preprocessor: Callable,
                           degradation: Optional[Callable] = None,
                           extract: Optional[Callable] = None) -> Dict[str, Any]:
    """Stack, degrade, resize back and extract ``F_c``: what a training batch becomes.

    HQ-only batches are degraded on their device (``degradation``); batches that
    carry an LQ use it. The LQ is brought to the GT size, because the one-step
    generator works at the output size: with ``resize_back=True`` the degradation
    already did it with a random mode (OSEDiff's augmentation), otherwise bicubic
    as at test time.

    Args:
        data: a collated batch.
        data_preprocessor: the model's ``SRDataPreprocessor``.
        degradation: the GT -> LQ degradation (None: batches must carry their LQ).
        extract: ``TeacherCondition.extract`` (None: no condition).

    Returns:
        ``{'gt', 'lq', 'cond', 'data_samples'}``: tensors in ``[0, 1]`` at the GT size;
        ``cond`` is None without a condition.
    """
    data = data_preprocessor(data, True)
    inputs = data['inputs']
    gt, lq = inputs.get('gt'), inputs.get('lq')
    if gt is None:
        raise KeyError("Training batches need 'gt' images.")
    if lq is None:
        if degradation is None:
            raise ValueError('A training batch without LQ needs model.degradation='
                             "dict(type='RealESRGANDegradation', ...).")
        out = degradation(gt)
        gt, lq = out['gt'], out.get('lq_up', out['lq'])
    lq = resize_to(lq, gt.shape[-2:])
    cond = None if extract is None else extract(gt, lq)
    return dict(gt=gt, lq=lq, cond=cond, data_samples=data['data_samples'])


@MODELS.register_module()
class ICMSR(OneStepSR):
    """OSEDiff-style one-step SR trained with image-conditioned VSD (Algorithm 1).

    A thin subclass of :class:`OneStepSR` (which infers): it adds the training
    degradation, the teacher's structural condition (one ``condition`` block:
    extractor + T2I-Adapters), the regulariser, the auxiliary fake-score model,
    the reconstruction losses and :meth:`train_step`.

    Module layout (why): the frozen SD UNet is built once (``self.unet``) and used
    in three roles through :class:`~icmsr.models.lora.LoRARoles` - generator
    (LoRA 'generator'), teacher (no LoRA) and fake score (LoRA 'aux'). Each
    trainable set is owned by exactly one child: ``generator`` (VAE-encoder LoRA,
    UNet LoRA, optional ``conv_in`` copy) and ``aux_diffusion`` (aux LoRA). The
    children with trainables are only ever run with gradients through their own
    ``forward``; the no-grad teacher/fake passes call the shared UNet directly.
    A per-child DDP wrapper (MMEngine's ``MMSeparateDistributedDataParallel``,
    ``find_unused_parameters=False`` suffices) therefore sees disjoint parameter
    sets and never a no-grad pass.

    Args:
        degradation: config of the GT -> LQ degradation of HQ-only training batches
            (``RealESRGANDegradation``); None: training batches carry their LQ.
        condition: the teacher condition block (:class:`TeacherCondition` args:
            ``kind``, ``adapters``, ``weights``, ``scale``, ``extractor``); None is
            the text-only teacher of OSEDiff.
        regularizer: ``VSDRegularizer`` args (``type`` optional: another regulariser
            with the same call, e.g. ``'TSDRegularizer'``).
        aux_diffusion: ``AuxDiffusion`` args.
        lpips: ``LPIPSLoss`` args; None disables LPIPS (and requires weight 0).
        loss_weights: ``l2``, ``lpips``, ``reg``, ``aux`` (OSEDiff: 1, 2, 1 and 1 for
            the aux loss, which has its own optimizer).
        share_unet: True (default) keeps one UNet for all roles; False gives the
            teacher and the fake score their own copies (the naive layout, for
            memory comparisons).
        **kwargs: the :class:`OneStepSR` arguments (components, generator, text,
            scale, test_cfg, base_seed, base_check, data_preprocessor).
    """

    def __init__(self, degradation: Optional[Dict[str, Any]] = None,
                 condition: Optional[Dict[str, Any]] = None,
                 regularizer: Optional[Dict[str, Any]] = None,
                 aux_diffusion: Optional[Dict[str, Any]] = None,
                 lpips: Optional[Dict[str, Any]] = None,
                 loss_weights: Optional[Dict[str, float]] = None,
                 share_unet: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        weights = dict(l2=1.0, lpips=2.0, reg=1.0, aux=1.0)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise KeyError(f'model.loss_weights: unknown keys {sorted(unknown)}; '
                           f'use {sorted(weights)}.')
        weights.update(loss_weights or {})
        self.loss_weights = weights
        if lpips is None and weights['lpips'] > 0:
            raise ValueError('model.lpips=None needs model.loss_weights.lpips=0.')
        self.degradation = build_or_use(degradation)
        with self.seeded_base():
            self.condition = (None if condition is None else
                              build_or_use(dict(condition), type='TeacherCondition'))
        teacher_unet = fake_unet = self.unet
        if not share_unet:
            # The naive layout: three full frozen UNets, built from the same config and seed.
            unet_cfg = kwargs['unet']
            if not isinstance(unet_cfg, dict):
                raise TypeError('model.share_unet=False needs model.unet as a config (it is built '
                                'three times).')
            with self.seeded_base():
                self.teacher_unet = teacher_unet = build_or_use(copy.deepcopy(unet_cfg))
            with self.seeded_base():
                self.fake_unet = fake_unet = build_or_use(copy.deepcopy(unet_cfg))
        self.regularizer = build_or_use(dict(regularizer or {}), type='VSDRegularizer',
                                        teacher_unet=teacher_unet, fake_unet=fake_unet,
                                        scheduler=self.scheduler, roles=self.roles)
        self.aux_diffusion = build_or_use(dict(aux_diffusion or {}), type='AuxDiffusion',
                                          unet=fake_unet, scheduler=self.scheduler,
                                          roles=self.roles)
        self.lpips = None if lpips is None else build_or_use(dict(lpips), type='LPIPSLoss')

    def trainable_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Parameters of each trained part, keyed like the ``OptimWrapperDict``.

        Returns:
            ``{'generator': [...], 'aux_diffusion': [...]}``.
        """
        groups = super().trainable_groups()
        groups['aux_diffusion'] = self._unwrapped('aux_diffusion').trainable_parameters()
        return groups

    # --------------------------------------------------------------- training
    def training_inputs(self, data: Union[dict, tuple, list]) -> Dict[str, Any]:
        """Prepare a training batch (see :func:`prepare_training_batch`) with this model's parts.

        Args:
            data: a collated batch.

        Returns:
            ``{'gt', 'lq', 'cond', 'data_samples'}``.
        """
        return prepare_training_batch(data, self.data_preprocessor, self.degradation,
                                      None if self.condition is None else self.condition.extract)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapperDict) -> Dict[str, torch.Tensor]:
        """One ICM-SR iteration (Algorithm 1): generator update, then aux update.

        Args:
            data: a collated batch.
            optim_wrapper: ``OptimWrapperDict`` with ``'generator'`` and
                ``'aux_diffusion'`` (see ``ICMSROptimWrapperConstructor``).

        Returns:
            Log variables: ``loss`` (generator total), ``loss_l2``,
            ``loss_lpips``, ``loss_reg``, ``loss_aux``. The batch itself is handed
            to ``SRVisualizationHook`` as ``self.last_batch``: ``lq``, ``sr`` (this
            step's output), ``gt`` in ``[0, 1]`` and ``cond``.
        """
        batch = self.training_inputs(data)
        gt01, lq01 = batch['gt'], batch['lq']
        gt, lq = gt01 * 2 - 1, lq01 * 2 - 1
        size = gt.shape[0]
        embeds = self.text(batch['data_samples'], size, images=dict(gt=gt01, lq=lq01))
        negative = self.text.negative(size)
        feats = None if self.condition is None else self.condition.features(batch['cond'])
        w = self.loss_weights

        gen_ow = optim_wrapper['generator']
        with gen_ow.optim_context(self.generator):
            x_hat, z0 = self.generator(lq, embeds)
            self.last_batch = dict(lq=lq01, sr=(x_hat.detach() + 1) / 2, gt=gt01,
                                   cond=batch['cond'])
            losses = dict(loss_l2=F.mse_loss(x_hat, gt) * w['l2'])
            if self.lpips is not None:
                losses['loss_lpips'] = self.lpips(x_hat, gt).mean() * w['lpips']
            reg_info = None
            if w['reg'] > 0:
                loss_reg, reg_info = self.regularizer(z0, embeds, negative, feats,
                                                      **self._regularizer_targets(gt))
                losses['loss_reg'] = loss_reg * w['reg']
        loss_g, log_vars = self.parse_losses(losses)
        # The generator role must be active again if checkpointing recomputes forwards.
        with self.roles.use(GENERATOR_ROLE):
            gen_ow.update_params(loss_g)

        aux_ow = optim_wrapper['aux_diffusion']
        with aux_ow.optim_context(self.aux_diffusion):
            # reg_info: Algorithm 1's variant reuses the regulariser's t, noise and z_t.
            loss_aux = self.aux_diffusion(z0.detach(), embeds, feats, reg_info=reg_info) * w['aux']
        loss_a, log_a = self.parse_losses(dict(loss_aux=loss_aux))
        with self.roles.use(AUX_ROLE):
            aux_ow.update_params(loss_a)
        log_vars['loss_aux'] = log_a['loss_aux']
        return {k: v.detach() for k, v in log_vars.items()}

    @torch.no_grad()
    def _regularizer_targets(self, gt: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Extra regulariser inputs: the HQ latent for target score matching (TSD).

        The HQ image is encoded by the frozen VAE encoder (its LoRA off), as TSD-SR does.

        Args:
            gt: the HQ batch in ``[-1, 1]``.

        Returns:
            ``{'target_z0': ...}`` when the regulariser ``needs_target``, else ``{}``.
        """
        if not getattr(self.regularizer, 'needs_target', False):
            return {}
        with self.roles.frozen_base():
            return dict(target_z0=self._unwrapped('generator').encode(gt))

    @staticmethod
    def condition_panels(cond: Any) -> Sequence[torch.Tensor]:
        """The condition maps of a batch as a list of image batches (for visualisation).

        Args:
            cond: ``training_inputs(...)['cond']``.

        Returns:
            ``[]``, ``[map]`` or ``[colormap, canny]``.
        """
        if cond is None:
            return []
        return list(cond) if isinstance(cond, (list, tuple)) else [cond]
