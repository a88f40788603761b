"""The video tokenizer's optional adversary (`--adversarial-weight`): a patch discriminator on
single frames, trained beside the tokenizer with its own optimizer and a hinge loss. Training
state only: it is kept in `train/video_tokenizer.pt`, never in the shipped weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class FrameDiscriminator(torch.nn.Module):
    """A patch discriminator on single frames: (N, 3, H, W) in [-1, 1] -> (N, 1, H/8, W/8) logits.

    Each logit judges a patch of about 40 pixels, the size of an object's corner region here;
    pixel losses alone let the decoder round corners into blobs.
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, c, 4, 2, 1), torch.nn.LeakyReLU(0.2)]
        for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c)):
            layers += [
                torch.nn.Conv2d(c_in, c_out, 4, 2, 1),
                torch.nn.GroupNorm(8, c_out),
                torch.nn.LeakyReLU(0.2),
            ]
        layers.append(torch.nn.Conv2d(4 * c, 1, 3, 1, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def frames_at(x: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """Frames `pick` of a (B, 3, T, H, W) batch counted clip by clip, as (len(pick), 3, H, W)."""
    return x.transpose(1, 2).flatten(0, 1)[pick]


class Adversary:
    """A FrameDiscriminator, its optimizer and its step count.

    Each call trains it one step on up to 16 frames (real vs reconstructed) and returns the
    tokenizer's hinge term, weighted by `weight` once the discriminator has had `warmup` steps
    (0 before); the gradient of that term passes through the discriminator, leaving it be.
    """

    FRAMES = 16  # frames per discriminator step

    def __init__(self, weight: float, warmup: int, lr: float, device: str):
        self.weight, self.warmup = weight, warmup
        self.disc = FrameDiscriminator().to(device)
        self.opt = torch.optim.AdamW(
            self.disc.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0
        )
        self.steps = 0

    def __call__(
        self, x: torch.Tensor, rec: torch.Tensor, rng: np.random.Generator, parts: dict
    ) -> torch.Tensor:
        """x, rec: (B, 3, T, H, W); logs `disc` and `adv` into `parts`."""
        n = x.shape[0] * x.shape[2]
        pick = np.sort(rng.choice(n, min(n, self.FRAMES), replace=False))
        pick = torch.from_numpy(pick).to(x.device)
        real, fake = frames_at(x, pick), frames_at(rec, pick)
        self.disc.requires_grad_(True)
        d_loss = F.relu(1 - self.disc(real)).mean() + F.relu(1 + self.disc(fake.detach())).mean()
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        self.steps += 1
        parts["disc"] = d_loss.detach()
        self.disc.requires_grad_(False)  # the tokenizer's backward passes through it
        g_loss = -self.disc(fake).mean()
        parts["adv"] = g_loss.detach()
        return (self.weight if self.steps > self.warmup else 0.0) * g_loss

    def state(self) -> dict:
        return {
            "discriminator": self.disc.state_dict(),
            "disc_optimizer": self.opt.state_dict(),
            "disc_steps": self.steps,
        }

    def load(self, state: dict) -> None:
        """Restore from a training state; one without a discriminator leaves it fresh (a run
        that adds the adversary to a trained tokenizer)."""
        if "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
            self.opt.load_state_dict(state["disc_optimizer"])
            self.steps = int(state["disc_steps"])
