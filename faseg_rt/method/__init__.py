"""The paper's method as pure tensor code, blind to which backend runs the networks.

prompts (dual prompts, class token spans), inversion (encode + one DDIM inversion step),
attention (capture of the maps HARD needs), hard (cross fusion + factorised HARD), ttf (upsample,
un-mirror, threshold, labels), reference (the literal, slow oracle the tests compare against).
"""
