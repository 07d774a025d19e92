"""Prompt extraction cost per image with a tiny random BLIP captioner (nothing downloaded).

Builds a BLIP model and processor by hand (a few thousand parameters, random
weights), saves them with ``save_pretrained`` and loads them back through
``HFCaptioner`` the way a user's hub id or folder is loaded, then times captioning
of 512x512 images on the CPU. The figure is the toolkit's overhead around a
captioner (processor, generate, decode) plus a tiny model, not the cost of a real
BLIP or RAM.

Example::

    python tools/benchmarks/prompt_extraction.py --size 512 --images 8 --threads 1
"""
import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, Optional, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

#: Word pieces of the tiny tokenizer (BERT's special tokens, BLIP's [DEC] start token).
TINY_VOCAB = (['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '[DEC]']
              + ['a', 'photo', 'of', 'cat', 'dog', 'tree', 'sky', 'house', 'red', 'blue']
              + [f'w{i}' for i in range(48)])


def save_tiny_blip(folder: str, seed: int = 0, image_size: int = 32) -> str:
    """Write a tiny random BLIP captioner (model + processor) to ``folder``.

    Args:
        folder: output folder (created).
        seed: torch seed of the random weights.
        image_size: the processor's and vision tower's input size.

    Returns:
        ``folder``.
    """
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)
    os.makedirs(folder, exist_ok=True)
    vocab = os.path.join(folder, 'vocab.txt')
    with open(vocab, 'w', encoding='utf-8') as f:
        f.write('\n'.join(TINY_VOCAB) + '\n')
    tokenizer = BertTokenizer(vocab, bos_token='[DEC]')
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={'height': image_size, 'width': image_size}),
        tokenizer=tokenizer)
    ids = dict(bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    config = BlipConfig(
        text_config=dict(vocab_size=len(TINY_VOCAB), hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, initializer_range=0.2, **ids),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=image_size, patch_size=8,
                           initializer_range=0.2),
        projection_dim=32)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', type=int, default=512, help='image side in pixels')
    p.add_argument('--images', type=int, default=8, help='timed images')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Time the tiny captioner; prints and returns ms per image."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from icmsr.models.prompt_extractors import HFCaptioner
    with tempfile.TemporaryDirectory() as tmp:
        captioner = HFCaptioner(save_tiny_blip(tmp), local_files_only=True,
                                batch_size=args.batch_size, max_new_tokens=20)
        g = torch.Generator().manual_seed(0)
        images = torch.rand(args.images, 3, args.size, args.size, generator=g)
        t0 = time.perf_counter()
        captioner(images[:1])  # load + warm-up
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        captioner(images)
        per_image = (time.perf_counter() - t0) / args.images
    result = dict(size=args.size, images=args.images, batch_size=args.batch_size,
                  threads=args.threads, load_and_first_s=round(load_s, 3),
                  ms_per_image=round(per_image * 1000, 2))
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
