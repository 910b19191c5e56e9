"""Training, with Keras: the regimes' registry (`specs`), the backbones and where they are cut (`backbones`),
the models (`models`), fitting one phase (`trainer`), the three regimes (`regimes`), augmentation, the stopping
rule, TensorFlow's set-up (`runtime`), and each run's curves and console lines (`figures`, `progress`)."""
