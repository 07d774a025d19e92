"""ICMSR: the OSEDiff-style one-step SR model trained with ICM regularization."""
import copy
from typing import Any, Dict, List, Optional, Sequence, Set, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.optim import OptimWrapperDict

from icmsr.registry import MODELS
from icmsr.structures import SRDataSample
from .diffusion import AUX_ROLE, GENERATOR_ROLE
from .lora import LoRARoles


def _build(cfg: Any) -> Any:
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg


def _sub(cfg: Optional[Dict[str, Any]], default_type: str, **default_args: Any) -> Any:
    cfg = dict(cfg or {})
    cfg.setdefault('type', default_type)
    return MODELS.build(cfg, default_args=default_args)


@MODELS.register_module()
class ICMSR(BaseModel):
    """One-step diffusion SR (OSEDiff generator) with image-conditioned VSD.

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

    Checkpoints (``state_dict``) hold only trainable tensors; ``load_state_dict``
    is strict about those and ignores missing frozen weights (they come from
    the pretrained configs).

    Args:
        unet: UNet config (``type='SDUNet'``) or module.
        vae: VAE config or module.
        text_encoder: text encoder config or module.
        tokenizer: tokenizer config or object.
        scheduler: scheduler config or object.
        adapter: T2I-Adapter / MultiAdapter config or module; None = OSEDiff.
        adapter_weights: per-adapter weights of a MultiAdapter.
        generator: extra args of ``OneStepGenerator`` (``type`` optional).
        regularizer: extra args of ``VSDRegularizer``.
        aux_diffusion: extra args of ``AuxDiffusion``.
        text: extra args of ``PromptEncoder`` (source, fixed_prompt, negative_prompt).
        lpips: ``LPIPSLoss`` args; None disables LPIPS (and requires weight 0).
        loss_weights: ``l2``, ``lpips``, ``reg``, ``aux`` (OSEDiff: 1, 2, 1 and 1 for
            the aux loss, which has its own optimizer).
        share_unet: True (default) keeps one UNet for all roles; False gives the
            teacher and the fake score their own copies (the naive layout, for
            memory comparisons).
        data_preprocessor: ``SRDataPreprocessor`` config.
        init_cfg: MMEngine init config (unused: weights come from the builders).
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 adapter: Any = None, adapter_weights: Optional[Sequence[float]] = None,
                 generator: Optional[Dict[str, Any]] = None,
                 regularizer: Optional[Dict[str, Any]] = None,
                 aux_diffusion: Optional[Dict[str, Any]] = None,
                 text: Optional[Dict[str, Any]] = None,
                 lpips: Optional[Dict[str, Any]] = None,
                 loss_weights: Optional[Dict[str, float]] = None,
                 share_unet: bool = True,
                 data_preprocessor: Optional[Dict[str, Any]] = None,
                 init_cfg: Optional[Dict[str, Any]] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='SRDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        weights = dict(l2=1.0, lpips=2.0, reg=1.0, aux=1.0)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise KeyError(f'ICMSR loss_weights: unknown keys {sorted(unknown)}; '
                           f'use {sorted(weights)}.')
        weights.update(loss_weights or {})
        self.loss_weights = weights
        self.roles = LoRARoles()
        sched = _build(scheduler)
        self.unet = _build(unet)
        self.unet.requires_grad_(False)
        teacher_unet = fake_unet = self.unet
        if not share_unet:
            # Copies made before any LoRA is attached: three full frozen UNets.
            self.teacher_unet = teacher_unet = copy.deepcopy(self.unet)
            self.fake_unet = fake_unet = copy.deepcopy(self.unet)
        self.share_unet = share_unet
        self.text = _sub(text, 'PromptEncoder', text_encoder=text_encoder, tokenizer=tokenizer)
        self.generator = _sub(generator, 'OneStepGenerator', vae=vae, unet=self.unet,
                              scheduler=sched, roles=self.roles)
        self.regularizer = _sub(regularizer, 'VSDRegularizer', unet=teacher_unet,
                                fake_unet=fake_unet, scheduler=sched, roles=self.roles,
                                adapter=adapter, adapter_weights=adapter_weights)
        self.aux_diffusion = _sub(aux_diffusion, 'AuxDiffusion', unet=fake_unet,
                                  scheduler=sched, roles=self.roles)
        if lpips is None and weights['lpips'] > 0:
            raise ValueError('ICMSR: lpips=None needs loss_weights lpips=0.')
        self.lpips = None if lpips is None else _sub(lpips, 'LPIPSLoss')
        self._filter_state = True
        self._register_state_dict_hook(ICMSR._keep_trainable_state)
        self.register_load_state_dict_post_hook(ICMSR._ignore_missing_frozen)

    def trainable_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Parameters of each trained part, keyed like the ``OptimWrapperDict``.

        Returns:
            ``{'generator': [...], 'aux_diffusion': [...]}``.
        """
        parts = {}
        for name in ('generator', 'aux_diffusion'):
            child = getattr(self, name)
            # Under a per-child DDP wrapper the component sits in ``.module``.
            parts[name] = (child.module if is_model_wrapper(child) else child).trainable_parameters()
        return parts

    # ------------------------------------------------------------ checkpoints
    def _unwrapped_named_tensors(self) -> Dict[str, torch.Tensor]:
        """Parameters and persistent buffers by state-dict key (wrappers skipped)."""
        out: Dict[str, torch.Tensor] = {}

        def walk(module: nn.Module, prefix: str) -> None:
            if is_model_wrapper(module):
                module = module.module
            for name, p in module._parameters.items():
                if p is not None:
                    out[prefix + name] = p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers_set:
                    out[prefix + name] = b
            for name, child in module._modules.items():
                if child is not None:
                    walk(child, prefix + name + '.')

        walk(self, '')
        return out

    def trainable_state_keys(self) -> Set[str]:
        """State-dict keys of the trainable tensors (those a checkpoint holds)."""
        return {k for k, t in self._unwrapped_named_tensors().items()
                if isinstance(t, nn.Parameter) and t.requires_grad}

    @staticmethod
    def _keep_trainable_state(module: 'ICMSR', state: Dict[str, Any], prefix: str,
                              local_metadata: Any) -> Dict[str, Any]:
        # Under per-child DDP the keys read ``generator.module.…``; checkpoints store
        # the unwrapped name so single- and multi-GPU checkpoints are interchangeable.
        keep = module.trainable_state_keys()
        for key in [k for k in state if k.startswith(prefix)]:
            value = state.pop(key)
            name = module._unwrapped_key(key[len(prefix):])
            if name in keep:
                state[prefix + name] = value
        return state

    def _unwrapped_key(self, key: str) -> str:
        """Drop the ``module.`` segments that model wrappers add to a state-dict key."""
        parts, out, node = key.split('.'), [], self
        i = 0
        while i < len(parts):
            if is_model_wrapper(node) and parts[i] == 'module':
                node = node.module
                i += 1
                continue
            out.append(parts[i])
            node = getattr(node, '_modules', {}).get(parts[i]) if node is not None else None
            i += 1
        return '.'.join(out)

    @staticmethod
    def _ignore_missing_frozen(module: 'ICMSR', incompatible: Any) -> None:
        # Frozen weights come from the pretrained builders, not from checkpoints.
        # Keys may carry a wrapper prefix, hence the suffix test.
        keep = module.trainable_state_keys()

        def trainable(key: str) -> bool:
            return key in keep or any(key.endswith('.' + k) for k in keep)

        frozen = [k for k in incompatible.missing_keys if not trainable(k)]
        for key in frozen:
            incompatible.missing_keys.remove(key)

    # --------------------------------------------------------------- training
    def _prompt_embeds(self, data_samples: Optional[Sequence[Any]], batch: int,
                       prompts: Optional[Sequence[str]] = None) -> torch.Tensor:
        if prompts is not None:
            return self.text.encode(list(prompts))
        return self.text(data_samples, batch)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapperDict) -> Dict[str, torch.Tensor]:
        """One ICM-SR iteration (Algorithm 1): generator update, then aux update.

        Args:
            data: a collated batch.
            optim_wrapper: ``OptimWrapperDict`` with ``'generator'`` and
                ``'aux_diffusion'`` (see ``ICMSROptimWrapperConstructor``).

        Returns:
            Log variables: ``loss`` (generator total), ``loss_l2``,
            ``loss_lpips``, ``loss_reg``, ``loss_aux``.
        """
        data = self.data_preprocessor(data, True)
        inputs, samples = data['inputs'], data['data_samples']
        gt = inputs['gt'] * 2 - 1
        lq = inputs['lq'] * 2 - 1
        batch = gt.shape[0]
        embeds = self._prompt_embeds(samples, batch)
        negative = self.text.negative(batch)
        feats = self.regularizer.adapter_features(inputs.get('cond'))
        w = self.loss_weights

        gen_ow = optim_wrapper['generator']
        with gen_ow.optim_context(self.generator):
            x_hat, z0 = self.generator(lq, embeds)
            losses = dict(loss_l2=F.mse_loss(x_hat, gt) * w['l2'])
            if self.lpips is not None:
                losses['loss_lpips'] = self.lpips(x_hat, gt).mean() * w['lpips']
            if w['reg'] > 0:
                loss_reg, _ = self.regularizer(z0, embeds, negative, feats)
                losses['loss_reg'] = loss_reg * w['reg']
        loss_g, log_vars = self.parse_losses(losses)
        # The generator role must be active again if checkpointing recomputes forwards.
        with self.roles.use(GENERATOR_ROLE):
            gen_ow.update_params(loss_g)

        aux_ow = optim_wrapper['aux_diffusion']
        with aux_ow.optim_context(self.aux_diffusion):
            loss_aux = self.aux_diffusion(z0.detach(), embeds, feats) * w['aux']
        loss_a, log_a = self.parse_losses(dict(loss_aux=loss_aux))
        with self.roles.use(AUX_ROLE):
            aux_ow.update_params(loss_a)
        log_vars['loss_aux'] = log_a['loss_aux']
        return {k: v.detach() for k, v in log_vars.items()}

    # -------------------------------------------------------------- inference
    @torch.no_grad()
    def super_resolve(self, lq: torch.Tensor, prompts: Optional[Sequence[str]] = None,
                      scale: int = 1) -> torch.Tensor:
        """Super-resolve a batch: the inference entry of ``icmsr.apis``.

        Args:
            lq: ``(B, 3, h, w)`` in ``[0, 1]``; with ``scale=1`` already at the
                output size (sides multiples of 8).
            prompts: one prompt per image; None uses the configured prompt source
                (``'caption'`` then means empty prompts).
            scale: bicubic upscaling applied to ``lq`` first.

        Returns:
            ``(B, 3, h*scale, w*scale)`` float32 in ``[0, 1]``, on ``lq``'s device.
        """
        from .data_preprocessor import resize_to
        if scale != 1:
            lq = resize_to(lq, (lq.shape[-2] * scale, lq.shape[-1] * scale))
        embeds = self._prompt_embeds(None, lq.shape[0], prompts)
        img, _ = self.generator(lq * 2 - 1, embeds)
        return ((img.float() + 1) / 2).clamp(0, 1)

    def _predict(self, inputs: Dict[str, Any],
                 data_samples: Optional[List[Any]]) -> List[SRDataSample]:
        samples = data_samples or [SRDataSample() for _ in range(len(inputs['lq']))]
        prompts = self.text.prompts_for(samples, len(samples))
        sr = self.super_resolve(inputs['lq'], prompts)
        for i, sample in enumerate(samples):
            sample.pred_img = sr[i].float().cpu()
            if inputs.get('gt') is not None:
                sample.gt_img = inputs['gt'][i].float().cpu()
        return samples

    def val_step(self, data: Union[dict, tuple, list]) -> List[SRDataSample]:
        """Predict a validation batch; samples get ``pred_img`` (and ``gt_img``)."""
        data = self.data_preprocessor(data, False)
        return self._predict(data['inputs'], data['data_samples'])

    def test_step(self, data: Union[dict, tuple, list]) -> List[SRDataSample]:
        """Predict a test batch; samples get ``pred_img`` (and ``gt_img``)."""
        data = self.data_preprocessor(data, False)
        return self._predict(data['inputs'], data['data_samples'])

    def forward(self, inputs: Dict[str, Any], data_samples: Optional[List[Any]] = None,
                mode: str = 'tensor') -> Any:
        """MMEngine's forward: ``'tensor'`` -> SR batch, ``'predict'`` -> samples.

        Training goes through :meth:`train_step` (two optimizers), not ``mode='loss'``.
        """
        if mode == 'tensor':
            prompts = self.text.prompts_for(data_samples, inputs['lq'].shape[0])
            return self.super_resolve(inputs['lq'], prompts)
        if mode == 'predict':
            return self._predict(inputs, data_samples)
        raise ValueError(f"ICMSR.forward mode {mode!r} is not supported: use 'tensor' or "
                         "'predict'; training runs through train_step.")
