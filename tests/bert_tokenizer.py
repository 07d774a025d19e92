"""A BERT tokenizer folder for tests that cannot reach the model hub.

RAM's text branch needs ``bert-base-uncased``'s tokenizer only for its size and
special tokens (tags come from RAM's own tag list), so a vocabulary with the same
special tokens at the same ids and filler words stands in for it.
"""
import os

#: Size of bert-base-uncased's vocabulary (RAM adds [DEC] and [ENC]: 30524).
BERT_BASE_VOCAB_SIZE = 30522


def save_bert_tokenizer(folder: str, vocab_size: int = BERT_BASE_VOCAB_SIZE) -> str:
    """Write ``vocab.txt`` with bert-base-uncased's special-token ids into ``folder``.

    Args:
        folder: where to write (created).
        vocab_size: tokens in the vocabulary (>= 104).

    Returns:
        ``folder``, loadable with ``BertTokenizer.from_pretrained``.
    """
    # bert-base-uncased: [PAD]=0, [unused0..98]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
    vocab = ['[PAD]'] + [f'[unused{i}]' for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]', '[MASK]']
    vocab += [f'word{i}' for i in range(vocab_size - len(vocab))]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'vocab.txt'), 'w') as f:
        f.write('\n'.join(vocab) + '\n')
    return folder
