(function(){
"use strict";
var $=function(i){return document.getElementById(i)};
var hist=[],last=null;
function esc(s){return String(s==null?"":s).replace(/[&<>"]/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]})}
function dur(ms){if(ms<1)return"<1ms";if(ms<1000)return Math.round(ms)+"ms";var s=ms/1000;if(s<60)return s.toFixed(1)+"s";var m=Math.floor(s/60);if(m<60)return m+"m"+Math.floor(s%60)+"s";return Math.floor(m/60)+"h"+m%60+"m"}
function stamp(t){var d=new Date(t);return isNaN(d)?"":d.toLocaleTimeString()}
function row(cells,attrs){return"<tr"+(attrs||"")+">"+cells.map(function(c){return"<td>"+c+"</td>"}).join("")+"</tr>"}
function chart(s,now){var w=180,h=40,max=Math.max(1,Math.max.apply(null,s.v)),p=s.t.map(function(t,i){return(w-(now-t)/60000*w).toFixed(1)+","+(h-2-s.v[i]/max*(h-4)).toFixed(1)}).join(" ");
return'<svg width="'+w+'" height="'+h+'"><title>slot '+s.slot+'</title><polyline fill="none" stroke="#36c" points="'+p+'"/><text x="3" y="12" font-size="10">slot '+s.slot+": "+s.v[s.v.length-1]+"</text></svg>"}
function outcome(e){if(e.kind=="reload"||e.kind=="upgrade")return e.kind+' <span class="'+(e.ok?"ok\">ok":"bad\">rolled back")+"</span>";return e.kind}
function status(d){
var st=d.status,now=Date.parse(d.now);last=d;
$("pid").textContent=st.pid;$("version").textContent=st.version||"";$("phase").textContent=st.phase;$("gen").textContent=st.generation;
$("serving").textContent=(st.serving?"serving":"not serving yet")+(st.reloading?", reloading to "+st.reloading:"");
$("live").textContent="live "+stamp(d.now);
$("gens").innerHTML=(d.generations||[]).map(function(g){var end=g.until?Date.parse(g.until):now;var r=hist.filter(function(e){return(e.kind=="reload"||e.kind=="upgrade")&&e.generation==g.generation}).pop();
return row([g.generation,stamp(g.since),dur(end-Date.parse(g.since))+(g.until?"":" (serving)"),r?outcome(r)+" in "+dur(r.duration_ms||0):""])}).join("");
$("workers").innerHTML=(st.workers||[]).map(function(w){var q=w.queue?Object.keys(w.queue).sort().map(function(k){return k+"="+w.queue[k]}).join(" "):"";
return row([w.slot,w.pid,w.generation,esc(w.state)+(w.away?' <span class="away">away: '+esc(w.away)+"</span>":""),(Date.parse(w.since)>0?dur(now-Date.parse(w.since)):""),w.restarts,esc(q),w.rss_bytes?(w.rss_bytes/1048576).toFixed(1)+" MB":""],' data-pid="'+w.pid+'"')}).join("");
$("queues").innerHTML=(d.queues||[]).map(function(c){return"<p>"+esc(c.listener)+"<br>"+c.slots.map(function(s){return chart(s,now)}).join("")+"</p>"}).join("")||'<p class="dim">no steered listener</p>';
}
function history(d){
var f=(d.entries||[])[0];if(f)hist=hist.filter(function(e){return e.seq<f.seq});
hist=hist.concat(d.entries||[]).slice(-256);
if(last)status(last);
$("history").innerHTML=hist.slice().reverse().map(function(e){return row([e.seq,stamp(e.time),outcome(e),e.generation||"",e.slot<0?"":e.slot,e.pid||"",e.duration_ms?dur(e.duration_ms):"",esc(e.reason)],' data-kind="'+esc(e.kind)+'" data-gen="'+(e.generation||0)+'" data-pid="'+(e.pid||0)+'"')}).join("");
}
if(!window.EventSource)return;
var es=new EventSource("/events?since=0");
es.addEventListener("status",function(m){status(JSON.parse(m.data))});
es.addEventListener("history",function(m){history(JSON.parse(m.data))});
es.onerror=function(){$("live").textContent="reconnecting"};
})();
