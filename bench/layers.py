"""The benchmark suite: the 1x1 convolutions of real networks at 224x224, one entry per distinct shape.

MobileNetV2, ResNet-50 (v1.5, with its stride-2 downsample 1x1s) and EfficientNet-B0 (with the
squeeze-excitation 1x1s at 1x1 spatial size) are walked out of the torchvision model definitions:
each model is built on the meta device and run forward on a 1x3x224x224 meta tensor with a hook on
every 1x1 nn.Conv2d, which records the input's spatial size without computing anything.
ShuffleNetV1 (g=3) is not in torchvision; its 1x1s are typed from Table 1 of the paper (Zhang et
al. 2018: stage widths 240/480/960, bottleneck = out/4, the first 1x1 of stage 2 not grouped, a
stride-2 unit's branch producing out - in channels for the concat). Plus the classic reduction of a
190x190 image with 512 channels to 10.

    python bench/layers.py          # prints the suite
"""

import dataclasses
import sys
import warnings
from typing import List, Optional

import torch
from torch import nn

TORCHVISION_MODELS = ("mobilenet_v2", "resnet50", "efficientnet_b0")
SHORT = {"mobilenet_v2": "mbv2", "resnet50": "r50", "efficientnet_b0": "effb0", "shufflenet_v1_g3": "shfl"}

# Small layers for the CI smoke run: grouped, strided, and 1x1 spatial size.
SMOKE = ("shfl:960>240g3@7", "r50:1024>2048s2@14", "effb0:96>4@1")


@dataclasses.dataclass
class Layer:
    name: str  # net:Cin>Cout[gG][sS]@H (H = W for every layer here; the name shows H alone then)
    c_in: int
    c_out: int
    h: int  # input spatial size
    w: int
    stride: int = 1
    groups: int = 1
    sources: List[str] = dataclasses.field(default_factory=list)  # model.module paths with this shape

    @property
    def h_out(self) -> int:
        return (self.h - 1) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w - 1) // self.stride + 1

    def flops(self, batch: int) -> int:
        """Multiply-adds x 2 of the forward conv."""
        return 2 * batch * self.c_out * (self.c_in // self.groups) * self.h_out * self.w_out

    def min_bytes(self, batch: int, element_size: int) -> int:
        """Fewest bytes the forward conv moves: the input pixels it uses read once, the weight once, the output written once."""
        used_input = batch * self.c_in * self.h_out * self.w_out  # stride s reads every s-th pixel only
        weight = self.c_out * (self.c_in // self.groups)
        output = batch * self.c_out * self.h_out * self.w_out
        return (used_input + weight + output) * element_size

    def input_elements(self, batch: int) -> int:
        return batch * self.c_in * self.h * self.w

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(h_out=self.h_out, w_out=self.w_out)
        return d


def layer_name(net: str, c_in: int, c_out: int, h: int, w: int, stride: int, groups: int) -> str:
    name = f"{SHORT.get(net, net)}:{c_in}>{c_out}"
    if groups != 1:
        name += f"g{groups}"
    if stride != 1:
        name += f"s{stride}"
    return name + (f"@{h}" if h == w else f"@{h}x{w}")


def torchvision_layers(model_name: str, image_size: int = 224) -> List[Layer]:
    """Every distinct 1x1 conv shape of a torchvision model at image_size x image_size, in forward order."""
    import torchvision

    found = {}

    def hook(module, inputs, output):
        _, c_in, h, w = inputs[0].shape
        stride, groups = module.stride, module.groups
        if stride[0] != stride[1] or module.padding != (0, 0) or module.dilation != (1, 1):
            raise ValueError(f"{model_name}.{module._bench_path}: unexpected 1x1 conv geometry {module}")
        key = (c_in, module.out_channels, h, w, stride[0], groups)
        if key not in found:
            found[key] = Layer(layer_name(model_name, *key), *key)
        found[key].sources.append(f"{model_name}.{module._bench_path}")

    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)(weights=None).eval()
        for path, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
                module._bench_path = path
                module.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.empty(1, 3, image_size, image_size))
    return list(found.values())


def shufflenet_v1_g3_layers() -> List[Layer]:
    """ShuffleNetV1 1x (g=3) at 224x224, from Table 1 of the paper: stages 2-4 at 28, 14, 7 with 240/480/960 channels."""
    groups = 3
    stages = [(24, 240, 28, 4), (240, 480, 14, 8), (480, 960, 7, 4)]  # (in, out, output size, units)
    found = {}

    def add(c_in, c_out, size, g, where):
        key = (c_in, c_out, size, size, 1, g)
        if key not in found:
            found[key] = Layer(layer_name("shufflenet_v1_g3", *key), *key)
        found[key].sources.append(f"shufflenet_v1_g3.{where}")

    for stage, (c_in, c_out, size, units) in enumerate(stages, start=2):
        mid = c_out // 4
        for unit in range(units):
            first = unit == 0
            unit_in = c_in if first else c_out
            in_size = size * 2 if first else size  # the stride-2 3x3 depthwise conv sits between the two 1x1s
            # The paper leaves the first 1x1 of stage 2 ungrouped: its 24 input channels are too few.
            add(unit_in, mid, in_size, 1 if stage == 2 and first else groups, f"stage{stage}.{unit}.pw1")
            # A stride-2 unit concatenates its branch with the avg-pooled shortcut: the branch makes out - in.
            add(mid, c_out - unit_in if first else c_out, size, groups, f"stage{stage}.{unit}.pw2")
    return list(found.values())


def reduction_layer() -> Layer:
    return Layer("reduce:512>10@190", 512, 10, 190, 190, sources=["190x190x512 -> 10 channel reduction"])


def suite(smoke: bool = False, only: Optional[str] = None) -> List[Layer]:
    """The whole suite, one entry per distinct shape (or the smoke subset), optionally filtered by a
    comma-separated list of substrings of the names."""
    layers: List[Layer] = []
    try:
        import torchvision  # noqa: F401

        for model_name in TORCHVISION_MODELS:
            layers += torchvision_layers(model_name)
    except ImportError:
        warnings.warn("torchvision is not installed: the suite has ShuffleNetV1 and the reduction only "
                      "(pip install torchvision for MobileNetV2, ResNet-50 and EfficientNet-B0)")
    layers += shufflenet_v1_g3_layers()
    layers.append(reduction_layer())
    # One entry per shape across the whole suite (MobileNetV2 and EfficientNet-B0 share several):
    # the first network's name, every network's module paths.
    unique = {}
    for layer in layers:
        key = (layer.c_in, layer.c_out, layer.h, layer.w, layer.stride, layer.groups)
        if key in unique:
            unique[key].sources += layer.sources
        else:
            unique[key] = layer
    layers = list(unique.values())
    if smoke:
        layers = [layer for layer in layers if layer.name in SMOKE]
    if only:
        keys = [k.strip() for k in only.split(",") if k.strip()]
        layers = [layer for layer in layers if any(k in layer.name for k in keys)]
    return layers


def main() -> int:
    layers = suite(smoke="--smoke" in sys.argv)
    print(f"{'name':<24}{'Cin':>6}{'Cout':>6}{'HxW':>9}{'s':>3}{'g':>3}{'MFLOP':>10}{'MB fp32':>9}{'FLOP/B':>8}  uses")
    for layer in layers:
        flops, nbytes = layer.flops(1), layer.min_bytes(1, 4)
        print(f"{layer.name:<24}{layer.c_in:>6}{layer.c_out:>6}{f'{layer.h}x{layer.w}':>9}{layer.stride:>3}"
              f"{layer.groups:>3}{flops / 1e6:>10.2f}{nbytes / 1e6:>9.2f}{flops / nbytes:>8.1f}  {len(layer.sources)}")
    print(f"{len(layers)} layers (batch 1 figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
