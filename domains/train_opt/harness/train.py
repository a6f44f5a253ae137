"""
A small GPT trained for a fixed budget: the editable half of the bundled CPU harness.

The budget is fixed compute (training FLOPs, so a bigger model gets fewer steps; deterministic for a
given seed and thread count) or wall-clock seconds, as prepare.py says.

Run from this folder with `python train.py`; the fixed data, budget and metric are in prepare.py,
which Python finds because a script's own folder is the first entry of sys.path.
"""

import time

T_START = time.time()  # total_seconds counts interpreter-side startup (imports) too

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from contextlib import nullcontext  # noqa: E402

# OpenMP worker threads that sleep instead of spinning: no measurable cost alone, but a trial that
# shares the CPUs with another torch process no longer crawls (1 step in 8 s instead of 7-9 when
# two ran side by side). Set the variable to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from prepare import (  # noqa: E402
    BUDGET_MODE,
    FLOP_BUDGET,
    MAX_SEQ_LEN,
    TIME_BUDGET,
    Tokenizer,
    evaluate_bpb,
    load_corpus,
    make_dataloader,
    planned_steps,
    training_seed,
)

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model
DEPTH = 4  # number of transformer blocks
ASPECT_RATIO = 32  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 32  # channels per attention head (heads = width // HEAD_DIM)
WINDOW_PATTERN = "SSSL"  # per-layer attention span, cycled: S = SHORT_WINDOW tokens, L = full context
SHORT_WINDOW = 32  # tokens a query in an S layer may attend to (itself included)
MLP_RATIO = 4  # MLP hidden width / model width
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap); 0 disables

# Optimization
TOTAL_BATCH_SIZE = 4096  # tokens per optimizer step; a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN
DEVICE_BATCH_SIZE = 16  # sequences per forward/backward pass (gradient accumulation makes up the rest)
EMBEDDING_LR = 0.03  # AdamW learning rate of the token embedding
UNEMBEDDING_LR = 0.003  # AdamW learning rate of the output head
MATRIX_LR = 0.003  # AdamW learning rate of the attention and MLP weight matrices
SCALAR_LR = 0.03  # AdamW learning rate of the per-layer residual mixing scalars
WEIGHT_DECAY = 0.0  # AdamW decoupled weight decay, matrices only
ADAM_BETAS = (0.9, 0.95)  # AdamW (beta1, beta2)
WARMUP_RATIO = 0.0  # fraction of the budget spent ramping the learning rate up from 0
WARMDOWN_RATIO = 0.0  # fraction of the budget at the end spent decaying it to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.0  # learning rate at the end of warmdown, as a fraction of the peak
SEED = 42  # parameter init and data order (BILEVEL_SEED in the environment overrides it)

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

run_seed = training_seed(SEED)
torch.manual_seed(run_seed)
torch.set_num_threads(int(os.environ.get("BILEVEL_THREADS") or os.cpu_count() or 1))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
AUTOCAST = torch.autocast("cuda", dtype=torch.bfloat16) if DEVICE.type == "cuda" else nullcontext()


def model_dim() -> int:
    return -(-DEPTH * ASPECT_RATIO // HEAD_DIM) * HEAD_DIM


def grad_accum_steps() -> int:
    per_pass = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    if TOTAL_BATCH_SIZE <= 0 or TOTAL_BATCH_SIZE % per_pass:
        sys.exit(
            f"ERROR: TOTAL_BATCH_SIZE ({TOTAL_BATCH_SIZE}) must be a positive multiple of "
            f"DEVICE_BATCH_SIZE * MAX_SEQ_LEN ({DEVICE_BATCH_SIZE} * {MAX_SEQ_LEN} = {per_pass})"
        )
    return TOTAL_BATCH_SIZE // per_pass


def layer_windows() -> list[int]:
    if not WINDOW_PATTERN or set(WINDOW_PATTERN) - {"S", "L"}:
        sys.exit(f"ERROR: WINDOW_PATTERN must be a non-empty string over S and L, got {WINDOW_PATTERN!r}")
    spans = {"S": SHORT_WINDOW, "L": MAX_SEQ_LEN}
    return [spans[WINDOW_PATTERN[i % len(WINDOW_PATTERN)]] for i in range(DEPTH)]


def lr_multiplier(progress: float) -> float:
    """Learning-rate scale at `progress` (fraction of the budget used): warmup, flat, warmdown."""
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress > 1.0 - WARMDOWN_RATIO:
        cooldown = max(0.0, (1.0 - progress) / WARMDOWN_RATIO)
        return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC
    return 1.0


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def window_mask(seq_len: int, window: int) -> torch.Tensor | None:
    """Boolean attention mask (True = may attend) for a causal sliding window; None = plain causal."""
    if window >= seq_len:
        return None
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    return (j <= i) & (i - j < window)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, window: int):
        super().__init__()
        self.n_head = dim // HEAD_DIM
        self.window = window
        # Built once for the full context; a shorter sequence uses its top-left corner.
        self.register_buffer("mask", window_mask(MAX_SEQ_LEN, window), persistent=False)
        self.c_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        mask = None if self.mask is None else self.mask[:T, :T]
        q, k, v = self.c_qkv(x).view(B, T, 3, self.n_head, HEAD_DIM).unbind(dim=2)
        q, k = apply_rotary(norm(q), cos, sin), apply_rotary(norm(k), cos, sin)  # QK-norm, then RoPE
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim: int, window: int):
        super().__init__()
        self.attn = CausalSelfAttention(dim, window)
        self.mlp = MLP(dim)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        dim = model_dim()
        self.windows = layer_windows()
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, w) for w in self.windows)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        # Per-layer input mix: x <- resid * x + x0 * (normed embedding), as in autoresearch.
        self.resid_lambdas = nn.Parameter(torch.ones(DEPTH))
        self.x0_lambdas = nn.Parameter(torch.zeros(DEPTH))
        cos, sin = rotary_tables(MAX_SEQ_LEN, HEAD_DIM)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights(dim)

    @torch.no_grad()
    def init_weights(self, dim: int) -> None:
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        bound = 3**0.5 * dim**-0.5  # uniform with std 1/sqrt(fan_in)
        for block in self.blocks:
            nn.init.uniform_(block.attn.c_qkv.weight, -bound, bound)
            nn.init.uniform_(block.mlp.c_fc.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx, targets=None, reduction="mean"):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()
        if LOGIT_SOFTCAP > 0:
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)

    def flops_per_token(self) -> float:
        """Forward+backward FLOPs per token: 6 per matmul weight plus attention scores and values."""
        matmul = sum(
            p.numel() for name, p in self.named_parameters() if p.dim() == 2 and name != "wte.weight"
        )
        attention = sum(12 * model_dim() * min(w, MAX_SEQ_LEN) for w in self.windows)
        return 6 * matmul + attention


def build_optimizer(model: GPT) -> torch.optim.Optimizer:
    matrices = [p for name, p in model.blocks.named_parameters() if p.dim() == 2]
    groups = [
        {"params": [model.wte.weight], "lr": EMBEDDING_LR, "weight_decay": 0.0},
        {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR, "weight_decay": 0.0},
        {"params": matrices, "lr": MATRIX_LR, "weight_decay": WEIGHT_DECAY},
        {"params": [model.resid_lambdas, model.x0_lambdas], "lr": SCALAR_LR, "weight_decay": 0.0},
    ]
    for group in groups:
        group["initial_lr"] = group["lr"]
    return torch.optim.AdamW(groups, betas=ADAM_BETAS, eps=1e-10)


# ---------------------------------------------------------------------------
# Train for the budget (FLOP_BUDGET or TIME_BUDGET), then evaluate
# ---------------------------------------------------------------------------

accum = grad_accum_steps()
tokenizer = Tokenizer()
model = GPT(tokenizer.vocab_size).to(DEVICE)
optimizer = build_optimizer(model)
num_params = sum(p.numel() for p in model.parameters())
# Compiling pays off only on a GPU; its first steps are compilation, so they are not timed.
compiled = DEVICE.type == "cuda" and os.environ.get("BILEVEL_COMPILE", "1") != "0"
step_fn = torch.compile(model, dynamic=False) if compiled else model
untimed_steps = 2 if compiled else 0
loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train", device=DEVICE, seed=run_seed)
steps_planned = planned_steps(model.flops_per_token(), TOTAL_BATCH_SIZE) if BUDGET_MODE == "flops" else 0
print(f"corpus: {load_corpus()[1]}")
print(f"device: {DEVICE.type} | threads: {torch.get_num_threads()} | params: {num_params / 1e6:.2f}M")
print(f"width: {model_dim()} | depth: {DEPTH} | windows: {model.windows} | grad accum: {accum}")
if BUDGET_MODE == "flops":
    print(f"budget: {FLOP_BUDGET:.3g} training FLOPs = {steps_planned} steps | seed: {run_seed}")
else:
    print(f"time budget: {TIME_BUDGET}s | seed: {run_seed}")

step = 0
training_time = 0.0
smooth_loss = 0.0
while True:
    t0 = time.time()
    if BUDGET_MODE == "flops":
        progress = step / steps_planned
    else:
        progress = min(training_time / TIME_BUDGET, 1.0)
    lrm = lr_multiplier(progress)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lrm
    for _ in range(accum):
        x, y, epoch = next(loader)
        with AUTOCAST:
            loss = step_fn(x, y)
        (loss / accum).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_f = loss.item()
    if math.isnan(loss_f) or loss_f > 100:
        print(f"training loss {loss_f} at step {step}", file=sys.stderr)
        print("\nFAIL", flush=True)
        sys.exit(1)
    dt = time.time() - t0
    if step >= untimed_steps:
        training_time += dt
    step += 1
    smooth_loss = 0.9 * smooth_loss + 0.1 * loss_f
    debiased = smooth_loss / (1 - 0.9**step)
    if BUDGET_MODE == "flops":
        remaining = f"{steps_planned - step} steps"
    else:
        remaining = f"{max(0.0, TIME_BUDGET - training_time):.0f}s"
    print(
        f"\rstep {step:05d} ({100 * progress:.1f}%) | loss: {debiased:.4f} | lrm: {lrm:.2f} | "
        f"dt: {1000 * dt:.0f}ms | tok/sec: {int(TOTAL_BATCH_SIZE / dt):,} | epoch: {epoch} | "
        f"remaining: {remaining}    ",
        end="",
        flush=True,
    )
    if (step >= steps_planned) if BUDGET_MODE == "flops" else (training_time >= TIME_BUDGET):
        break
print()

model.eval()
with AUTOCAST:
    val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)
if not math.isfinite(val_bpb):
    print(f"val_bpb is {val_bpb}", file=sys.stderr)
    print("FAIL", flush=True)
    sys.exit(1)

total_tokens = step * TOTAL_BATCH_SIZE
timed_tokens = (step - untimed_steps) * TOTAL_BATCH_SIZE
mfu = 0.0
peak_vram_mb = 0.0
if DEVICE.type == "cuda":
    peak_vram_mb = torch.cuda.max_memory_allocated() / 1024**2
    h100_bf16_peak = 989.5e12  # dense FLOP/s; the estimate is relative to an H100 whatever the card
    mfu = 100 * model.flops_per_token() * timed_tokens / max(training_time, 1e-9) / h100_bf16_peak

print("---")
print(f"val_bpb: {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds: {time.time() - T_START:.1f}")
print(f"peak_vram_mb: {peak_vram_mb:.1f}")
print(f"mfu_percent: {mfu:.2f}")
print(f"total_tokens_M: {total_tokens / 1e6:.3f}")
print(f"num_steps: {step}")
print(f"num_params_M: {num_params / 1e6:.3f}")
print(f"depth: {DEPTH}")
print(f"seed: {run_seed}")
print(f"budget_flops: {FLOP_BUDGET if BUDGET_MODE == 'flops' else 0:.4g}")  # 0: a wall-clock budget
