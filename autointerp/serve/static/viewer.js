// The viewer's one script (served at /static/viewer.js; the CSP allows no inline script).
// The true/simulated toggle of a unit page's records.
function setView(v){
  document.querySelectorAll('span.tok[data-t]').forEach(function(s){
    s.style.background = (v === 'sim' ? s.getAttribute('data-s') : s.getAttribute('data-t')) || 'transparent';
  });
  document.body.setAttribute('data-view', v);
  var b = document.getElementById('toggle');
  if (b) b.textContent = v === 'sim' ? 'show true activations' : 'show simulated activations';
}
var tb = document.getElementById('toggle');
if (tb) tb.addEventListener('click', function(){ setView(document.body.getAttribute('data-view') === 'sim' ? 'true' : 'sim'); });
if (location.hash === '#sim') setView('sim');
