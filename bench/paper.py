"""Numbers printed in the paper (SPEC §9), to stand beside ours. Nothing here is measured."""

# Table 1: the original networks (error: NIN top-1 on CIFAR-10; AlexNet / VGG-16 top-5 on ImageNet).
PAPER_TABLE1 = {
    "nin": {"error": 10.4, "metric": "top-1", "dataset": "CIFAR-10"},
    "alexnet": {"error": 19.6, "metric": "top-5", "dataset": "ImageNet"},
    "vgg16": {"error": 10.1, "metric": "top-5", "dataset": "ImageNet"},
    "hardware": "quad-core Core i5-4460 (CPU), GeForce GTX 980 (GPU)",
}

# Table 2 (CIFAR-10), NIN with greedy impact plans: top-1 error increase after fine-tuning (points) at
# 2x and 3x speedup; the targets for our NIN rows.
PAPER_NIN_TUNED = {2.0: 1.0, 3.0: 2.5}

# Table 3 (ImageNet): speedup, multiplication reduction, memory reduction, top-5 error increase before
# and after fine-tuning (percentage points).
PAPER_ROWS = [
    dict(network=n, device=d, speedup=s, mult=m, mem=mem, error=e, tuned=t)
    for n, d, s, m, mem, e, t in [
        ("alexnet", "CPU", 2.0, 2.1, 1.8, 10.7, 2.3),
        ("alexnet", "CPU", 3.0, 3.5, 2.6, 28.0, 6.1),
        ("alexnet", "CPU", 3.6, 4.4, 2.9, 60.7, 9.9),
        ("alexnet", "GPU", 2.0, 2.0, 1.7, 8.5, 2.0),
        ("alexnet", "GPU", 3.0, 2.6, 2.0, 16.4, 3.2),
        ("alexnet", "GPU", 4.1, 3.4, 2.4, 28.1, 6.2),
        ("vgg16", "CPU", 2.0, 1.8, 1.5, 15.6, 1.1),
        ("vgg16", "CPU", 3.0, 2.9, 1.8, 54.3, 3.7),
        ("vgg16", "CPU", 4.0, 4.0, 2.5, 71.6, 5.5),
        ("vgg16", "GPU", 2.0, 1.9, 1.7, 23.1, 2.5),
        ("vgg16", "GPU", 3.0, 2.8, 2.4, 65.0, 6.8),
        ("vgg16", "GPU", 4.0, 4.7, 3.4, 76.5, 7.3),
    ]
]
