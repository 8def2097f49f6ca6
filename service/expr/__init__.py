"""The objective language: ``parse`` checks user text, ``compile_expression`` makes it torch.

Which functions may be called, and the torch code behind each, is one table in
``service.expr.functions`` that both read.
"""
from service.expr.compile import Objective, check_on_shape, compile_expression, warm_up
from service.expr.parse import Expression, ExpressionError, parse

__all__ = ["Expression", "ExpressionError", "Objective", "check_on_shape", "compile_expression", "parse", "warm_up"]
