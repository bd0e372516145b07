{
  // A number as PromQL and humans write it: 1800, 0.25 (std.toString gives 0.90000000000000002).
  num(x)::
    if std.isString(x) then x
    else if x == std.floor(x) && std.abs(x) < 1e15 then '%d' % x
    else '%g' % x,

  // Series of a counter that grew within the window, counting a series born there as grown.
  // increase() needs two samples, so it misses the first failure of a (cmd, result_code) pair:
  // the series appears already at 1. A series absent `window` ago counts with its value.
  newOrIncreased(selector, window)::
    '(\n    increase(%(s)s[%(w)s]) > 0\n  or\n    (\n      %(s)s\n    unless\n      %(s)s offset %(w)s\n    )\n)'
    % { s: selector, w: window },
}
