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
}

PLANNED: dict[str, str] = {}

# architectures that define channel_groups() (prune_granularity: channel, models/channels.py)
CHANNEL_ARCHS = ("lenet_300_100", "Conv4", "resnet20", "resnet32", "resnet32_double",
                 "cResNet18", "ResNet18", "ResNet50", "ResNet101", "TinyResNet18", "vgg16",
                 "tinyvgg16")
