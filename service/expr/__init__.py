"""The objective language: ``parse`` checks user text, ``compile_expression`` makes it torch,
``check_on_shape`` traces it on a meta tensor (no memory) and estimates its peak bytes.

Which functions may be called, and the torch code behind each, is one table in
``service.expr.functions`` that both read.
"""
from service.expr.compile import Objective, compile_expression
from service.expr.parse import Expression, ExpressionError, parse
from service.expr.trace import check_on_shape, warm_up

__all__ = ["Expression", "ExpressionError", "Objective", "check_on_shape", "compile_expression", "parse", "warm_up"]
