"""Architecture names → constructors ("module:function", imported on demand).

Kept free of torch imports so the config schema can validate names cheaply.  Upstream names
that later work will add are listed in PLANNED so a config naming them gets a clear
"not implemented yet" instead of "unknown".
"""

ARCHITECTURES = {
    "resnet20": "models.resnet_cifar:resnet20",
    "resnet32": "models.resnet_cifar:resnet32",
    "cResNet18": "models.resnet:cifar_resnet18",
    "ResNet18": "models.resnet:resnet18",
    "ResNet50": "models.resnet:resnet50",
    "Conv4": "models.small:conv4",
    "lenet_300_100": "models.small:lenet_300_100",
    "resnet32_double": "models.resnet_cifar:resnet32_double",
    "TinyResNet18": "models.resnet:tiny_resnet18",
    "ResNet101": "models.resnet:resnet101",
    "vgg16": "models.vgg:vgg16",
    "tinyvgg16": "models.vgg:tinyvgg16",
    "WideResNet28": "models.wide_resnet:wide_resnet28",
    "MobileNetV2": "models.mobilenet:mobilenet_v2",
    "tinyMobileNetV2": "models.mobilenet:tiny_mobilenet_v2",
    # upstream's plain-layer reference networks (dense training only; models/normal.py)
    "Conv4Normal": "models.normal:conv4_normal",
    "resnet20Normal": "models.normal:resnet20_normal",
    "resnet32Normal": "models.normal:resnet32_normal",
    "TinyResNet18Normal": "models.normal:tiny_resnet18_normal",
    "vgg16_normal": "models.normal:vgg16_normal",
}

# The plain-layer architectures and the weight init upstream gave them (whatever the
# config's `init`): PyTorch's default ("standard") or kaiming-normal (fan_in, relu gain).
PLAIN_INITS = {"Conv4Normal": "standard", "resnet20Normal": "kaiming_normal",
               "resnet32Normal": "kaiming_normal", "TinyResNet18Normal": "standard",
               "vgg16_normal": "standard"}

# Architecture names of upstream configs that upstream's main.py could not build, or that
# belong to its separate language-model / vision-transformer experiments (not this project).
_SEPARATE = ("is built by upstream's separate language-model scripts (transformer_main.py), "
             "not by its main.py; language models are not part of this project")
UPSTREAM_UNBUILDABLE = {
    "TwoLayerFC": "exists only in upstream's greedy-search code (main_greedy.py, "
                  "models/greedy); upstream's main.py could not build it",
    "RNNModel": _SEPARATE,
    "transformer": _SEPARATE,
    "deit_small_patch16_224": "is upstream's vision-transformer (DeiT) experiment; this "
                              "project builds convolutional networks only",
}

PLANNED: dict[str, str] = {}

# architectures that define channel_groups() (prune_granularity: channel, models/channels.py)
CHANNEL_ARCHS = ("lenet_300_100", "Conv4", "resnet20", "resnet32", "resnet32_double",
                 "cResNet18", "ResNet18", "ResNet50", "ResNet101", "TinyResNet18", "vgg16",
                 "tinyvgg16")
