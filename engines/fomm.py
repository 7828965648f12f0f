"""First Order Motion Model (vox-256) with the official constructor arguments and state_dict keys.

Follows AliaksandrSiarohin/first-order-model `modules/{util,keypoint_detector,dense_motion,generator}.py` and
`animate.py:normalize_kp`; the spec is `../shared/reference/checkpoint-formats.md` section 2. Differences that do
not change results: the 2x2 jacobian inverse is written out (ONNX has no matrix inverse), and broadcasting replaces
`repeat`. `align_corners` of every `grid_sample` is a constructor option: False is PyTorch >= 1.3 behaviour (what
the test vectors use), True is what the 2019 checkpoints were trained under.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.graphs import Graphed
from engines.images import to_tensor, to_uint8

Keypoints = dict[str, torch.Tensor]  # {"value": [B,K,2] (x, y in [-1,1]), "jacobian": [B,K,2,2]}


def make_coordinate_grid(h: int, w: int, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """[h,w,2] grid whose last axis is (x, y), both spanning [-1, 1]."""
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    yy = y.view(-1, 1).repeat(1, w)
    xx = x.view(1, -1).repeat(h, 1)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(value: torch.Tensor, h: int, w: int, kp_variance: float) -> torch.Tensor:
    """[B,K,2] keypoints -> [B,K,h,w] Gaussian heat-maps."""
    grid = make_coordinate_grid(h, w, value.dtype, value.device)[None, None]  # [1,1,h,w,2]
    diff = grid - value[:, :, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / kp_variance)


def inverse2x2(m: torch.Tensor) -> torch.Tensor:
    """Inverse of [...,2,2] matrices by the closed form."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    row0 = torch.stack([d, -b], dim=-1)
    row1 = torch.stack([-c, a], dim=-1)
    return torch.stack([row0, row1], dim=-2) / det[..., None, None]


class ResBlock2d(nn.Module):
    def __init__(self, in_features: int, kernel_size: Any, padding: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm2d(in_features, affine=True)
        self.norm2 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    def __init__(self, in_features: int, out_features: int, kernel_size: Any = 3, padding: Any = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2.0))))


class DownBlock2d(nn.Module):
    def __init__(self, in_features: int, out_features: int, kernel_size: Any = 3, padding: Any = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    def __init__(self, in_features: int, out_features: int, kernel_size: Any = 3, padding: Any = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else min(max_features, block_expansion * (2**i)),
                min(max_features, block_expansion * (2 ** (i + 1))),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            in_filters = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(UpBlock2d(in_filters, min(max_features, block_expansion * (2**i))))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        x = list(x)
        out = x.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), x.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256) -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then keep every (1/scale)-th pixel; the kernel is the `weight` buffer of the checkpoints."""

    weight: torch.Tensor

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        grid = torch.arange(size, dtype=torch.float32)
        mean = (size - 1) / 2
        g = torch.exp(-((grid - mean) ** 2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel[None, None].repeat(channels, 1, 1, 1))
        self.groups = channels
        self.int_inv_scale = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        return out[:, :, :: self.int_inv_scale, :: self.int_inv_scale]


class KPDetector(nn.Module):
    """Image [B,C,H,W] in [0,1] -> {"value": [B,K,2], "jacobian": [B,K,2,2]}."""

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        single_jacobian_map: bool = False,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks=num_blocks, max_features=max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        self.num_kp, self.num_channels = num_kp, num_channels
        self.num_jacobian_maps = 0
        self.jacobian: nn.Conv2d | None = None
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=(7, 7), padding=pad
            )
            with torch.no_grad():
                assert self.jacobian.bias is not None
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1.0, 0, 0, 1] * self.num_jacobian_maps))
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x: torch.Tensor) -> Keypoints:
        if x.ndim != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"KPDetector: expected [B,{self.num_channels},H,W], got {list(x.shape)}")
        if self.scale_factor != 1:
            x = self.down(x)
        features = self.predictor(x)
        logits = self.kp(features)  # [B,K,h,w]
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.reshape(b, k, -1) / self.temperature, dim=2).reshape(b, k, h, w)
        grid = make_coordinate_grid(h, w, heatmap.dtype, heatmap.device)
        out = {"value": (heatmap.unsqueeze(-1) * grid[None, None]).sum(dim=(2, 3))}
        if self.jacobian is not None:
            jmap = self.jacobian(features).reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jmap).reshape(b, k, 4, -1).sum(dim=-1)
            out["jacobian"] = jacobian.reshape(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int,
        estimate_occlusion_map: bool = False,
        scale_factor: float = 1,
        kp_variance: float = 0.01,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks=num_blocks, max_features=max_features
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
            if estimate_occlusion_map
            else None
        )
        self.num_kp, self.scale_factor, self.kp_variance = num_kp, scale_factor, kp_variance
        self.align_corners = align_corners
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def sparse_motions(self, h: int, w: int, kp_driving: Keypoints, kp_source: Keypoints) -> torch.Tensor:
        """[B,K+1,h,w,2]: identity for the background, then T_k(z) = J_s J_d^-1 (z - kp_d) + kp_s per keypoint."""
        value_s = kp_source["value"]
        b = value_s.shape[0]
        identity = make_coordinate_grid(h, w, value_s.dtype, value_s.device)[None, None]  # [1,1,h,w,2]
        grid = identity - kp_driving["value"][:, :, None, None, :]
        if "jacobian" in kp_driving:
            jac = torch.matmul(kp_source["jacobian"], inverse2x2(kp_driving["jacobian"]))  # [B,K,2,2]
            grid = torch.matmul(jac[:, :, None, None], grid.unsqueeze(-1)).squeeze(-1)
        driving_to_source = grid + value_s[:, :, None, None, :]
        return torch.cat([identity.expand(b, 1, h, w, 2), driving_to_source], dim=1)

    def forward(self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict[str, Any]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        b, c, h, w = source_image.shape
        k1 = self.num_kp + 1
        heat = kp2gaussian(kp_driving["value"], h, w, self.kp_variance) - kp2gaussian(
            kp_source["value"], h, w, self.kp_variance
        )
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # [B,K+1,1,h,w]
        motions = self.sparse_motions(h, w, kp_driving, kp_source)  # [B,K+1,h,w,2]
        repeated = source_image.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * k1, h, w, 2), align_corners=self.align_corners)
        deformed = deformed.reshape(b, k1, c, h, w)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).reshape(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)  # [B,K+1,h,w]
        deformation = (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 1)
        out: dict[str, Any] = {"sparse_deformed": deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


class OcclusionAwareGenerator(nn.Module):
    def __init__(
        self,
        num_channels: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: dict[str, Any] | None = None,
        estimate_jacobian: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.dense_motion_network = (
            DenseMotionNetwork(
                num_kp=num_kp,
                num_channels=num_channels,
                estimate_occlusion_map=estimate_occlusion_map,
                align_corners=align_corners,
                **dense_motion_params,
            )
            if dense_motion_params is not None
            else None
        )
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                min(max_features, block_expansion * (2**i)), min(max_features, block_expansion * (2 ** (i + 1)))
            )
            for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                min(max_features, block_expansion * (2 ** (num_down_blocks - i))),
                min(max_features, block_expansion * (2 ** (num_down_blocks - i - 1))),
            )
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        in_features = min(max_features, block_expansion * (2**num_down_blocks))
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(in_features, kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels
        self.align_corners = align_corners

    def deform_input(self, inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if h_old != h or w_old != w:
            deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear")
            deformation = deformation.permute(0, 2, 3, 1)
        return F.grid_sample(inp, deformation, align_corners=self.align_corners)

    def forward(self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints) -> dict[str, Any]:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        result: dict[str, Any] = {}
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source_image, kp_driving, kp_source)
            result["mask"] = motion["mask"]
            result["sparse_deformed"] = motion["sparse_deformed"]
            occlusion = motion.get("occlusion_map")
            deformation = motion["deformation"]
            out = self.deform_input(out, deformation)
            if occlusion is not None:
                result["occlusion_map"] = occlusion
                if out.shape[2:] != occlusion.shape[2:]:
                    occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
                out = out * occlusion
            result["deformed"] = self.deform_input(source_image, deformation)
            result["deformation"] = deformation
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        result["prediction"] = torch.sigmoid(self.final(out))
        return result


def convex_hull_area(points: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    return float(ConvexHull(points).volume)


def normalize_kp(
    kp_source: Keypoints,
    kp_driving: Keypoints,
    kp_driving_initial: Keypoints,
    adapt_movement_scale: bool | float = False,
    use_relative_movement: bool = False,
    use_relative_jacobian: bool = False,
) -> Keypoints:
    """Relative motion transfer of `animate.py`: the driving motion since its first frame, applied to the source.

    `adapt_movement_scale=True` scales by sqrt(hull area of source / hull area of the first driving frame) from
    batch item 0, as upstream; a float is taken as that scale already computed (keeps scipy out of a traced graph).
    """
    if adapt_movement_scale is True:
        scale = np.sqrt(convex_hull_area(kp_source["value"][0].detach().cpu().numpy())) / np.sqrt(
            convex_hull_area(kp_driving_initial["value"][0].detach().cpu().numpy())
        )
    elif adapt_movement_scale is False:
        scale = 1.0
    else:
        scale = float(adapt_movement_scale)
    kp_new = dict(kp_driving)
    if use_relative_movement:
        kp_new["value"] = (kp_driving["value"] - kp_driving_initial["value"]) * scale + kp_source["value"]
        if use_relative_jacobian:
            diff = torch.matmul(kp_driving["jacobian"], inverse2x2(kp_driving_initial["jacobian"]))
            kp_new["jacobian"] = torch.matmul(diff, kp_source["jacobian"])
    return kp_new


class KeypointEngine(nn.Module):
    """Engine boundary: image [B,C,S,S] in [0,1] -> kp_value [B,K,2], kp_jacobian [B,K,2,2]."""

    input_names = ("image",)
    output_names = ("kp_value", "kp_jacobian")

    def __init__(self, detector: KPDetector, size: int = 256) -> None:
        super().__init__()
        if detector.jacobian is None:
            raise ValueError("the keypoint engine needs a detector with estimate_jacobian=True")
        self.detector, self.size = detector, size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kp = self.detector(image)
        return kp["value"], kp["jacobian"]

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.rand(batch, self.detector.num_channels, self.size, self.size),)


class AnimatorEngine(nn.Module):
    """Engine boundary: source image + source and driving keypoints -> prediction [B,C,S,S] in [0,1].

    Takes keypoints already normalised (`normalize_kp`), so the graph has no data-dependent Python.
    """

    input_names = ("source", "kp_source_value", "kp_source_jacobian", "kp_driving_value", "kp_driving_jacobian")
    output_names = ("prediction",)

    def __init__(self, generator: OcclusionAwareGenerator, num_kp: int, size: int = 256) -> None:
        super().__init__()
        self.generator, self.num_kp, self.size = generator, num_kp, size

    def forward(
        self,
        source: torch.Tensor,
        kp_source_value: torch.Tensor,
        kp_source_jacobian: torch.Tensor,
        kp_driving_value: torch.Tensor,
        kp_driving_jacobian: torch.Tensor,
    ) -> torch.Tensor:
        out = self.generator(
            source,
            kp_driving={"value": kp_driving_value, "jacobian": kp_driving_jacobian},
            kp_source={"value": kp_source_value, "jacobian": kp_source_jacobian},
        )
        prediction: torch.Tensor = out["prediction"]
        return prediction

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        k = self.num_kp
        eye = torch.eye(2).expand(batch, k, 2, 2).contiguous()
        value = torch.rand(batch, k, 2) * 1.6 - 0.8
        return (torch.rand(batch, self.generator.num_channels, self.size, self.size), value, eye, value * 0.9, eye)


class Driver:
    """The one FOMM driving loop (first-order-model's `demo.py:make_animation`, frame by frame): a source
    portrait's keypoints once, then per driving frame its keypoints, normalised against the first frame's (relative
    motion and jacobians, optionally scaled by the hulls' areas), and the generator's prediction. Images go in and
    out as uint8 RGB at the model's size; the `animate` tool and the `fomm` recaster both drive through it."""

    def __init__(self, ckpt: Any, device: str = "cpu", relative: bool = True, adapt_scale: bool = False) -> None:
        if ckpt.kind != "fomm":
            raise ValueError(f"{ckpt.path}: holds a {ckpt.kind} network, not FOMM")
        self.device = device
        self.size = int(ckpt.config.get("image_size", 256))
        self.detector = ckpt.modules["kp_detector"].to(device)
        self.generator = ckpt.modules["generator"].to(device)
        norm = dict(ckpt.config.get("normalize_kp", {}))
        jacobian = bool(ckpt.config["common_params"].get("estimate_jacobian", False))
        norm.update(use_relative_movement=relative, use_relative_jacobian=relative and jacobian,
                    adapt_movement_scale=adapt_scale)
        self.norm = norm
        self.kp_keys = ("value", "jacobian") if getattr(self.detector, "jacobian", None) is not None else ("value",)
        # on a GPU both networks replay from CUDA graphs (engines/graphs.py); on the CPU these are plain calls
        self._detect = Graphed(self.detector)
        self._predict = Graphed(self._prediction)

    def _prediction(self, image: torch.Tensor, *keypoints: torch.Tensor) -> torch.Tensor:
        """The generator's prediction from flat keypoint tensors (the driving ones, then the source's)."""
        n = len(self.kp_keys)
        driving = dict(zip(self.kp_keys, keypoints[:n], strict=True))
        source = dict(zip(self.kp_keys, keypoints[n:], strict=True))
        return self.generator(image, kp_driving=driving, kp_source=source)["prediction"]

    def tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [H,W,3] RGB -> [1,3,size,size] in [0,1] (resized with area averaging when it is not the size)."""
        return to_tensor(image, "unit", self.size, self.device)

    @torch.no_grad()
    def keypoints(self, image: np.ndarray) -> Keypoints:
        return self._detect(self.tensor(image))

    @torch.no_grad()
    def source(self, image: np.ndarray) -> tuple[torch.Tensor, Keypoints]:
        """A portrait made ready to animate: its tensor and its keypoints."""
        tensor = self.tensor(image)
        return tensor, self._detect(tensor)

    @torch.no_grad()
    def animate(self, source: tuple[torch.Tensor, Keypoints], driving: Keypoints, initial: Keypoints) -> np.ndarray:
        """The source moved as the driving keypoints moved from the initial ones: uint8 [size,size,3] RGB."""
        image, kp_source = source
        kp_norm = normalize_kp(kp_source, driving, initial, **self.norm)
        prediction = self._predict(image, *(kp_norm[k] for k in self.kp_keys), *(kp_source[k] for k in self.kp_keys))
        return to_uint8(prediction, "unit")[0]
